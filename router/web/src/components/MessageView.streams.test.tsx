import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter } from "react-router";
import { describe, expect, it, vi } from "vitest";
import { addUserMessage, applyFrame, emptyChat, updateMessage } from "../lib/stream";
import { MessageView } from "./MessageView";

const actions = () => ({ retry: vi.fn(), edit: vi.fn(), cancel: vi.fn(), stopOthers: vi.fn() });

describe("MessageView: messages that did not go, stopped answers", () => {
  it("a queued message says it waits, and offers to stop the other answer or cancel", async () => {
    let s = addUserMessage(emptyChat("c"), "later please");
    const key = s.messages[0].key;
    s = updateMessage(s, key, (m) => ({ ...m, status: "queued" }));
    const a = actions();
    render(
      <MemoryRouter>
        <MessageView message={s.messages[0]} actions={a} />
      </MemoryRouter>,
    );
    expect(screen.getByRole("status")).toHaveTextContent("Waiting: sends when the other answer ends");
    await userEvent.click(screen.getByRole("button", { name: "Stop it and send" }));
    expect(a.stopOthers).toHaveBeenCalled();
    await userEvent.click(screen.getByRole("button", { name: "Cancel" }));
    expect(a.cancel).toHaveBeenCalledWith(key);
    expect(screen.getByText("later please")).toBeInTheDocument();
  });

  it("a refused message keeps its text, says why, and can be retried or edited", async () => {
    const s = applyFrame(addUserMessage(emptyChat("c"), "my long question"), {
      type: "error",
      code: "wake_failed",
      message: "your workspace could not be started; try again",
    });
    const a = actions();
    render(
      <MemoryRouter>
        <MessageView message={s.messages[0]} actions={a} />
      </MemoryRouter>,
    );
    expect(screen.getByText("my long question")).toBeInTheDocument();
    expect(screen.getByRole("alert")).toBeInTheDocument();
    await userEvent.click(screen.getByRole("button", { name: "Retry" }));
    expect(a.retry).toHaveBeenCalledWith(s.messages[0].key);
    await userEvent.click(screen.getByRole("button", { name: "Edit" }));
    expect(a.edit).toHaveBeenCalledWith(s.messages[0].key);
  });

  it("an answer stopped before its first word is a note, not an empty bubble", () => {
    let s = applyFrame(addUserMessage(emptyChat("c"), "hi"), { type: "turn", seq: 1, conversation_id: "c" });
    s = applyFrame(s, { type: "done", seq: 2, conversation_id: "c" });
    const { container } = render(
      <MemoryRouter>
        <MessageView message={s.messages[1]} />
      </MemoryRouter>,
    );
    expect(screen.getByText("Stopped")).toBeInTheDocument();
    expect(container.querySelector(".rounded-2xl")).toBeNull();
  });
});
