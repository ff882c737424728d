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
        { type: "text", seq: 2, delta: "Hel" },
        { type: "text", seq: 3, delta: "lo " },
        { type: "text", seq: 4, delta: "world" },
      ],
      s,
    );
    expect(s.conversationId).toBe("c1");
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
      { type: "text", seq: 2, delta: "Let me write it." },
      { type: "tool_use", seq: 3, id: "t1", name: "Write", input: { file_path: "/workspace/a.py" } },
      { type: "tool_result", seq: 4, id: "t1", is_error: false, content: "ok" },
      { type: "document", seq: 5, id: "d1", filename: "notes.md" },
      { type: "text", seq: 6, delta: "Done." },
      { type: "voice", seq: 7, url: "/api/files/v1/download", transcript: "Done." },
    ]);
    const parts = s.messages[0].parts;
    expect(parts.map((p) => p.kind)).toEqual(["text", "tool", "document", "text"]);
    expect(parts[1]).toMatchObject({ name: "Write", result: { content: "ok", isError: false } });
    expect(s.messages[0].voice?.map((v) => v.url)).toEqual(["/api/files/v1/download"]);
  });

  it("keeps every spoken sentence in order, and a voice error does not end the answer", () => {
    const s = fold([
      { type: "turn", seq: 1, conversation_id: "c1" },
      { type: "text", seq: 2, delta: "One. Two. " },
      { type: "voice", seq: 3, url: "/api/voice/a?sig=1", transcript: "One." },
      { type: "voice", seq: 4, url: "", transcript: "Two.", error: { code: "voice_failed", message: "down" } },
      { type: "text", seq: 5, delta: "Three." },
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
      { type: "text", seq: 2, delta: "a" },
      { type: "text", seq: 3, delta: "b" },
    ];
    const once = fold(frames);
    const twice = fold([...frames, { type: "text", seq: 2, delta: "a" }, { type: "text", seq: 3, delta: "b" }, { type: "text", seq: 4, delta: "c" }]);
    expect(once.messages[0].parts).toEqual([{ kind: "text", text: "ab" }]);
    expect(twice.messages[0].parts).toEqual([{ kind: "text", text: "abc" }]);
    expect(twice.lastSeq).toBe(4);
  });

  it("puts errors on the answer being streamed, or on the chat", () => {
    let s = fold([{ type: "turn", seq: 1, conversation_id: "c1" }, { type: "text", seq: 2, delta: "x" }]);
    s = applyFrame(s, { type: "error", code: "agent_crashed", message: "crashed" });
    expect(s.messages[0].error?.code).toBe("agent_crashed");
    expect(s.streaming).toBe(false);
    const r = applyFrame(addUserMessage(emptyChat(), "hi"), { type: "error", code: "rate_limited", message: "slow down" });
    expect(r.error?.code).toBe("rate_limited");
  });

  it("tracks the workspace state", () => {
    expect(applyFrame(emptyChat(), { type: "status", state: "waking" }).workspace).toBe("waking");
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
    expect(s.messages[1].parts[1]).toMatchObject({ kind: "tool", name: "Bash", result: { isError: true } });
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
});
