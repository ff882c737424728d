import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter } from "react-router";
import { describe, expect, it, vi } from "vitest";
import { addUserMessage, applyFrame, emptyChat, fromHistory } from "../lib/stream";
import { MessageView, type RewriteActions } from "./MessageView";

const stored = () =>
  fromHistory({
    id: "c",
    title: "t",
    created_at: "",
    updated_at: "",
    messages: [
      { id: "u1", role: "user", content: "the question", events: [{ type: "attachment", id: "f1", filename: "data.csv" }], complete: true, created_at: "" },
      { id: "a1", role: "assistant", content: "The answer so far", events: [{ type: "stopped", at: 17 }], complete: true, created_at: "" },
    ],
  }).messages;

const rewrite = (disabled = false): RewriteActions => ({ disabled, resend: vi.fn(), regenerate: vi.fn() });

const show = (ui: React.ReactNode) => render(<MemoryRouter>{ui}</MemoryRouter>);

describe("MessageView: edit and resend", () => {
  it("Edit turns the message into a box; Send sends the new text in its place", async () => {
    const [question] = stored();
    const r = rewrite();
    show(<MessageView message={question} rewrite={r} />);
    await userEvent.click(screen.getByRole("button", { name: "Edit message" }));
    const box = screen.getByRole("textbox", { name: "Edit message" });
    expect(box).toHaveValue("the question");
    expect(box).toHaveFocus();
    // The attachments go again with the new text.
    expect(screen.getByText("data.csv")).toBeInTheDocument();
    await userEvent.clear(box);
    const send = screen.getByRole("button", { name: "Send" });
    expect(send).toBeDisabled();
    await userEvent.type(box, "a better question");
    await userEvent.click(send);
    expect(r.resend).toHaveBeenCalledWith(question.key, "a better question");
  });

  it("Escape and Cancel give the message back unchanged, focus on Edit", async () => {
    const [question] = stored();
    const r = rewrite();
    show(<MessageView message={question} rewrite={r} />);
    await userEvent.click(screen.getByRole("button", { name: "Edit message" }));
    await userEvent.type(screen.getByRole("textbox", { name: "Edit message" }), " more{Escape}");
    expect(screen.queryByRole("textbox", { name: "Edit message" })).toBeNull();
    expect(screen.getByText("the question")).toBeInTheDocument();
    await vi.waitFor(() => expect(screen.getByRole("button", { name: "Edit message" })).toHaveFocus());
    await userEvent.keyboard("{Enter}");
    await userEvent.click(screen.getByRole("button", { name: "Cancel" }));
    expect(screen.queryByRole("textbox")).toBeNull();
    expect(r.resend).not.toHaveBeenCalled();
  });

  it("while a turn runs Edit and Regenerate are disabled", () => {
    const [question, answer] = stored();
    const r = rewrite(true);
    show(
      <>
        <MessageView message={question} rewrite={r} />
        <MessageView message={answer} rewrite={r} canRegenerate />
      </>,
    );
    expect(screen.getByRole("button", { name: "Edit message" })).toBeDisabled();
    expect(screen.getByRole("button", { name: "Regenerate answer" })).toBeDisabled();
  });

  it("a message not stored yet (no id) has no Edit", () => {
    const s = addUserMessage(emptyChat("c"), "just sent");
    const m = { ...s.messages[0], status: undefined };
    show(<MessageView message={m} rewrite={rewrite()} />);
    expect(screen.queryByRole("button", { name: "Edit message" })).toBeNull();
  });
});

describe("MessageView: regenerate, stopped", () => {
  it("only the last answer offers Regenerate", async () => {
    const [, answer] = stored();
    const r = rewrite();
    const { rerender } = show(<MessageView message={answer} rewrite={r} />);
    expect(screen.queryByRole("button", { name: "Regenerate answer" })).toBeNull();
    rerender(
      <MemoryRouter>
        <MessageView message={answer} rewrite={r} canRegenerate />
      </MemoryRouter>,
    );
    await userEvent.click(screen.getByRole("button", { name: "Regenerate answer" }));
    expect(r.regenerate).toHaveBeenCalledWith(answer.key);
  });

  it("a stopped answer with text shows the text and a Stopped note under it, stored or live", () => {
    const [, answer] = stored();
    let s = applyFrame(addUserMessage(emptyChat("c"), "hi"), { type: "turn", seq: 1, conversation_id: "c" });
    s = applyFrame(s, { type: "text", seq: 2, conversation_id: "c", delta: "Half an answer" });
    s = applyFrame(s, { type: "done", seq: 3, conversation_id: "c", stopped: true });
    show(
      <>
        <MessageView message={answer} />
        <MessageView message={s.messages[1]} />
      </>,
    );
    const [first, second] = screen.getAllByRole("article", { name: "Jarvis" });
    expect(within(first).getByText("The answer so far")).toBeInTheDocument();
    expect(within(first).getByTestId("stopped-note")).toHaveTextContent("Stopped");
    expect(within(second).getByText("Half an answer")).toBeInTheDocument();
    expect(within(second).getByTestId("stopped-note")).toBeInTheDocument();
  });

  it("an answer that ran to its end has no Stopped note", () => {
    let s = applyFrame(addUserMessage(emptyChat("c"), "hi"), { type: "turn", seq: 1, conversation_id: "c" });
    s = applyFrame(s, { type: "text", seq: 2, conversation_id: "c", delta: "Whole answer" });
    s = applyFrame(s, { type: "done", seq: 3, conversation_id: "c" });
    show(<MessageView message={s.messages[1]} />);
    expect(screen.getByText("Whole answer")).toBeInTheDocument();
    expect(screen.queryByTestId("stopped-note")).toBeNull();
  });
});
