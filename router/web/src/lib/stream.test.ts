import { describe, expect, it } from "vitest";
import { addUserMessage, applyFrame, emptyChat, fromHistory, type ChatState } from "./stream";
import type { ServerFrame } from "./types";

const fold = (frames: ServerFrame[], s: ChatState = emptyChat()) => frames.reduce(applyFrame, s);

describe("stream reducer", () => {
  it("accumulates text deltas into one answer", () => {
    let s = addUserMessage(emptyChat(), "hi");
    s = fold(
      [
        { type: "turn", seq: 1, conversation_id: "c1" },
        { type: "text", seq: 2, conversation_id: "c1", delta: "Hel" },
        { type: "text", seq: 3, conversation_id: "c1", delta: "lo " },
        { type: "text", seq: 4, conversation_id: "c1", delta: "world" },
      ],
      s,
    );
    expect(s.streaming).toBe(true);
    expect(s.messages).toHaveLength(2);
    expect(s.messages[1].parts).toEqual([{ kind: "text", text: "Hello world" }]);
    s = applyFrame(s, { type: "done", seq: 5, conversation_id: "c1", usage: { input_tokens: 3, output_tokens: 4 } });
    expect(s.streaming).toBe(false);
    expect(s.messages[1].complete).toBe(true);
    expect(s.messages[1].usage).toEqual({ input_tokens: 3, output_tokens: 4 });
  });

  it("renders tool use, its result, documents and voice in order", () => {
    const s = fold([
      { type: "turn", seq: 1, conversation_id: "c1" },
      { type: "text", seq: 2, conversation_id: "c1", delta: "Let me write it." },
      { type: "tool_use", seq: 3, conversation_id: "c1", id: "t1", name: "Write", input: { file_path: "/workspace/a.py" } },
      { type: "tool_result", seq: 4, conversation_id: "c1", id: "t1", is_error: false, content: "ok" },
      { type: "document", seq: 5, conversation_id: "c1", id: "d1", filename: "notes.md" },
      { type: "text", seq: 6, conversation_id: "c1", delta: "Done." },
      { type: "voice", seq: 7, conversation_id: "c1", url: "/api/files/v1/download", transcript: "Done." },
    ]);
    const parts = s.messages[0].parts;
    expect(parts.map((p) => p.kind)).toEqual(["text", "tool", "document", "text"]);
    expect(parts[1]).toMatchObject({ name: "Write", result: { content: "ok", isError: false } });
    expect(s.messages[0].voice?.map((v) => v.url)).toEqual(["/api/files/v1/download"]);
  });

  it("keeps every spoken sentence in order, and a voice error does not end the answer", () => {
    const s = fold([
      { type: "turn", seq: 1, conversation_id: "c1" },
      { type: "text", seq: 2, conversation_id: "c1", delta: "One. Two. " },
      { type: "voice", seq: 3, conversation_id: "c1", url: "/api/voice/a?sig=1", transcript: "One." },
      { type: "voice", seq: 4, conversation_id: "c1", url: "", transcript: "Two.", error: { code: "voice_failed", message: "down" } },
      { type: "text", seq: 5, conversation_id: "c1", delta: "Three." },
    ]);
    const m = s.messages[0];
    expect(m.voice?.map((v) => [v.transcript, v.error?.code])).toEqual([
      ["One.", undefined],
      ["Two.", "voice_failed"],
    ]);
    expect(m.complete).toBe(false);
    expect(s.streaming).toBe(true);
    expect(m.parts).toEqual([{ kind: "text", text: "One. Two. Three." }]);
  });

  it("ignores frames whose seq was already applied", () => {
    const frames: ServerFrame[] = [
      { type: "turn", seq: 1, conversation_id: "c1" },
      { type: "text", seq: 2, conversation_id: "c1", delta: "a" },
      { type: "text", seq: 3, conversation_id: "c1", delta: "b" },
    ];
    const once = fold(frames);
    const twice = fold([...frames, { type: "text", seq: 2, conversation_id: "c1", delta: "a" }, { type: "text", seq: 3, conversation_id: "c1", delta: "b" }, { type: "text", seq: 4, conversation_id: "c1", delta: "c" }]);
    expect(once.messages[0].parts).toEqual([{ kind: "text", text: "ab" }]);
    expect(twice.messages[0].parts).toEqual([{ kind: "text", text: "abc" }]);
    expect(twice.lastSeq).toBe(4);
  });

  it("puts errors on the answer being streamed, or on the chat", () => {
    let s = fold([{ type: "turn", seq: 1, conversation_id: "c1" }, { type: "text", seq: 2, conversation_id: "c1", delta: "x" }]);
    s = applyFrame(s, { type: "error", code: "agent_crashed", message: "crashed" });
    expect(s.messages[0].error?.code).toBe("agent_crashed");
    expect(s.streaming).toBe(false);
    // Refused before its turn started: the message is marked failed, to send again.
    const r = applyFrame(addUserMessage(emptyChat(), "hi"), { type: "error", code: "rate_limited", message: "slow down" });
    expect(r.messages[0]).toMatchObject({ status: "failed", error: { code: "rate_limited" }, request: { content: "hi" } });
    expect(r.streaming).toBe(false);
    expect(applyFrame(emptyChat(), { type: "error", code: "x", message: "y" }).error?.code).toBe("x");
  });

  it("rebuilds a stored conversation with its tool events", () => {
    const s = fromHistory({
      id: "c1",
      title: "t",
      created_at: "",
      updated_at: "",
      messages: [
        { id: "m1", role: "user", content: "hi", events: [], complete: true, created_at: "" },
        {
          id: "m2",
          role: "assistant",
          content: "hello",
          events: [
            { type: "tool_use", id: "t1", name: "Bash", input: { command: "ls" } },
            { type: "tool_result", id: "t1", is_error: true, content: "nope" },
          ],
          complete: false,
          created_at: "",
        },
      ],
    });
    expect(s.messages[1].parts[0]).toMatchObject({ kind: "tool", name: "Bash", result: { isError: true } });
    expect(s.messages[1].error?.code).toBe("incomplete");
  });

  it("keeps a message's attachments, live and from history", () => {
    const live = addUserMessage(emptyChat(), "sum it", [{ id: "f1", filename: "sales.csv" }]);
    expect(live.messages[0].parts).toEqual([
      { kind: "text", text: "sum it" },
      { kind: "attachment", id: "f1", filename: "sales.csv" },
    ]);
    const stored = fromHistory({
      id: "c1",
      title: "t",
      created_at: "",
      updated_at: "",
      messages: [
        {
          id: "m1",
          role: "user",
          content: "sum it",
          events: [{ type: "attachment", id: "f1", filename: "sales.csv", path: "uploads/sales.csv" }],
          complete: true,
          created_at: "",
        },
      ],
    });
    expect(stored.messages[0].parts).toEqual(live.messages[0].parts);
  });

  it("an answer stopped before its first word is a stopped note, live and from history", () => {
    let s = fold([{ type: "turn", seq: 1, conversation_id: "c1" }], addUserMessage(emptyChat(), "hi"));
    s = applyFrame(s, { type: "done", seq: 2, conversation_id: "c1" });
    expect(s.messages[1]).toMatchObject({ complete: true, stopped: true });
    const stored = fromHistory({
      id: "c1",
      title: "t",
      created_at: "",
      updated_at: "",
      messages: [
        { id: "m1", role: "user", content: "hi", events: [], complete: true, created_at: "" },
        { id: "m2", role: "assistant", content: "", events: [{ type: "stopped" }], complete: true, created_at: "" },
      ],
    });
    expect(stored.messages[1]).toMatchObject({ stopped: true, parts: [] });
    expect(stored.messages[1].error).toBeUndefined();
  });

  it("rebuilds text and tool cards in the order they streamed", () => {
    const s = fromHistory({
      id: "c1",
      title: "t",
      created_at: "",
      updated_at: "",
      messages: [
        {
          id: "m2",
          role: "assistant",
          content: "Héllo ✓ I ran it. Done.",
          events: [
            { type: "tool_use", seq: 3, id: "t1", name: "Bash", input: { command: "ls" }, at: 8 },
            { type: "tool_result", seq: 4, id: "t1", is_error: false, content: "ok", at: 8 },
            { type: "document", seq: 6, id: "d1", filename: "a.md", at: 18 },
          ],
          complete: true,
          created_at: "",
        },
      ],
    });
    const parts = s.messages[0].parts;
    expect(parts.map((p) => p.kind)).toEqual(["text", "tool", "text", "document", "text"]);
    expect(parts[0]).toEqual({ kind: "text", text: "Héllo ✓ " });
    expect(parts[1]).toMatchObject({ name: "Bash", result: { content: "ok" } });
    expect(parts[2]).toEqual({ kind: "text", text: "I ran it. " });
    expect(parts[4]).toEqual({ kind: "text", text: "Done." });
  });

  it("stored events without a place come before the text (tool cards above the final answer)", () => {
    const s = fromHistory({
      id: "c1",
      title: "t",
      created_at: "",
      updated_at: "",
      messages: [
        {
          id: "m2",
          role: "assistant",
          content: "Final answer.",
          events: [{ type: "tool_use", id: "t1", name: "Bash", input: {} }],
          complete: true,
          created_at: "",
        },
      ],
    });
    expect(s.messages[0].parts.map((p) => p.kind)).toEqual(["tool", "text"]);
  });

  it("a stored answer whose turn still runs streams on from the stored seq, not cut off", () => {
    const s = fromHistory({
      id: "c1",
      title: "t",
      created_at: "",
      updated_at: "",
      last_seq: 60,
      running: true,
      messages: [
        { id: "m1", role: "user", content: "count", events: [], complete: true, created_at: "" },
        { id: "m2", role: "assistant", content: "[001] … [059]", events: [], complete: false, created_at: "" },
      ],
    });
    expect(s.lastSeq).toBe(60);
    expect(s.streaming).toBe(true);
    expect(s.messages[1].complete).toBe(false);
    expect(s.messages[1].error).toBeUndefined();
    const next = applyFrame(s, { type: "text", seq: 61, conversation_id: "c1", delta: " [060]" });
    expect(next.messages[1].parts).toEqual([{ kind: "text", text: "[001] … [059] [060]" }]);
    const ended = fromHistory({ ...{ id: "c1", title: "t", created_at: "", updated_at: "" }, running: false, messages: [
      { id: "m2", role: "assistant", content: "half", events: [], complete: false, created_at: "" },
    ] });
    expect(ended.messages[0].error?.code).toBe("incomplete");
  });
});
