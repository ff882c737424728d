import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter } from "react-router";
import { beforeAll, describe, expect, it } from "vitest";
import { addUserMessage, applyFrame, emptyChat } from "../lib/stream";
import type { ServerFrame } from "../lib/types";
import { MessageView } from "./MessageView";

function renderChat(frames: ServerFrame[]) {
  const s = frames.reduce(applyFrame, emptyChat());
  return render(
    <MemoryRouter>
      {s.messages.map((m) => (
        <MessageView key={m.key} message={m} live={s.streaming} />
      ))}
    </MemoryRouter>,
  );
}

describe("MessageView (stream renderer)", () => {
  // The Markdown renderer is lazy-loaded in the app; load it once up front.
  beforeAll(() => import("./Markdown"), 30_000);

  it("shows streamed text as Markdown, deduplicated", async () => {
    renderChat([
      { type: "turn", seq: 1, conversation_id: "c" },
      { type: "text", seq: 2, delta: "# Title\n\nSome " },
      { type: "text", seq: 2, delta: "# Title\n\nSome " },
      { type: "text", seq: 3, delta: "**bold** text" },
    ]);
    expect(await screen.findByRole("heading", { name: "Title" })).toBeInTheDocument();
    expect(screen.getByText("bold").tagName).toBe("STRONG");
    expect(screen.getAllByRole("heading")).toHaveLength(1);
  });

  it("highlights code blocks", async () => {
    const { container } = renderChat([
      { type: "turn", seq: 1, conversation_id: "c" },
      { type: "text", seq: 2, delta: "```python\ndef f():\n    return 1\n```" },
    ]);
    await screen.findByText("def");
    expect(container.querySelector("code.hljs.language-python")).not.toBeNull();
    expect(container.querySelector(".hljs-keyword")?.textContent).toBe("def");
  });

  it("shows tool activity compactly, expandable to input and result", async () => {
    renderChat([
      { type: "turn", seq: 1, conversation_id: "c" },
      { type: "tool_use", seq: 2, id: "t1", name: "Bash", input: { command: "python3 hello.py" } },
      { type: "tool_result", seq: 3, id: "t1", is_error: false, content: [{ type: "text", text: "hello output" }] },
    ]);
    const toggle = screen.getByRole("button", { name: /Ran python3 hello\.py/ });
    expect(toggle).toHaveAttribute("aria-expanded", "false");
    expect(toggle).toHaveTextContent("python3 hello.py");
    expect(toggle).toHaveTextContent("done");
    expect(screen.queryByText("hello output")).toBeNull();
    await userEvent.click(toggle);
    expect(toggle).toHaveAttribute("aria-expanded", "true");
    expect(screen.getByText("hello output")).toBeInTheDocument();
  });

  it("shows errors inline with what to do", () => {
    renderChat([
      { type: "turn", seq: 1, conversation_id: "c" },
      { type: "error", code: "quota_exceeded", message: "quota" },
    ]);
    expect(screen.getByRole("alert")).toHaveTextContent(/allowance/);
    expect(screen.getByRole("link", { name: /Account/ })).toHaveAttribute("href", "/account");
  });

  it("shows the files a message names", () => {
    const s = addUserMessage(emptyChat(), "look", [
      { id: "f1", filename: "sales.csv" },
      { id: "f2", filename: "photo.png" },
    ]);
    render(
      <MemoryRouter>
        <MessageView message={s.messages[0]} />
      </MemoryRouter>,
    );
    const chips = screen.getAllByTestId("attachment");
    expect(chips.map((c) => c.textContent)).toEqual(["sales.csv", "photo.png"]);
  });
});
