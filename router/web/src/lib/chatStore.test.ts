import { describe, expect, it, vi } from "vitest";
import { conversation, flush, setup, text } from "../test/chatHarness";
import { STOP_GIVE_UP_MS } from "./chatStore";

describe("ChatStore", () => {
  it("keeps each conversation's frames in its own conversation, never the open one", async () => {
    const { store, socket } = await setup({
      a: conversation("a", [{ id: "a1", role: "user", content: "count", events: [], complete: true, created_at: "" }]),
      b: conversation("b", [
        { id: "b1", role: "user", content: "hi", events: [], complete: true, created_at: "" },
        { id: "b2", role: "assistant", content: "Hello from B.", events: [], complete: true, created_at: "" },
      ], { last_seq: 3 }),
    });
    await store.open("a");
    await flush();
    socket.push({ type: "turn", seq: 1, conversation_id: "a" });
    socket.push({ type: "text", seq: 2, conversation_id: "a", delta: "[001] " });
    await store.open("b");
    await flush();
    // A streams on while B is open: none of it shows in B.
    socket.push({ type: "text", seq: 3, conversation_id: "a", delta: "[002] " });
    expect(text(store)).toEqual(["hi", "Hello from B."]);
    expect(store.getSnapshot().chat.streaming).toBe(false);
    socket.push({ type: "text", seq: 4, conversation_id: "a", delta: "[003]" });
    // Back to A: its live answer, whole.
    await store.open("a");
    expect(text(store)).toEqual(["count", "[001] [002] [003]"]);
    expect(store.getSnapshot().chat.streaming).toBe(true);
  });

  it("after a reload shows the stored part, then exactly the rest after its last seq", async () => {
    const { store, socket } = await setup({
      a: conversation(
        "a",
        [
          { id: "a1", role: "user", content: "count", events: [], complete: true, created_at: "" },
          { id: "a2", role: "assistant", content: "[001][002]", events: [], complete: false, created_at: "" },
        ],
        { last_seq: 3, running: true },
      ),
    });
    // Live frames of the running answer arrive before the history.
    socket.push({ type: "text", seq: 6, conversation_id: "a", delta: "[005]" });
    await store.open("a");
    await flush();
    expect(store.getSnapshot().chat.streaming).toBe(true);
    expect(store.getSnapshot().chat.messages[1].error).toBeUndefined();
    expect(socket.sent).toContainEqual({ type: "resume", conversation_id: "a", after_seq: 3 });
    // A live frame sent before the router saw the resume: past a gap, waits for the replay.
    socket.push({ type: "text", seq: 7, conversation_id: "a", delta: "[006]" });
    for (const [seq, d] of [[4, "[003]"], [5, "[004]"], [6, "[005]"], [7, "[006]"], [8, "[007]"]] as const)
      socket.push({ type: "text", seq, conversation_id: "a", delta: d });
    socket.push({ type: "done", seq: 9, conversation_id: "a" });
    expect(text(store)).toEqual(["count", "[001][002][003][004][005][006][007]"]);
    expect(store.getSnapshot().chat.streaming).toBe(false);
  });

  it("queues a message refused by the plan's limit and sends it when the other answer ends", async () => {
    const { store, socket } = await setup({
      a: conversation("a", [{ id: "a1", role: "user", content: "count", events: [], complete: true, created_at: "" }]),
      b: conversation("b", []),
    });
    await store.open("a");
    await flush();
    socket.push({ type: "turn", seq: 1, conversation_id: "a" });
    await store.open("b");
    await flush();
    socket.sent.length = 0;
    store.send("my question", false);
    expect(socket.sent).toEqual([{ type: "message", content: "my question", conversation_id: "b", voice: false }]);
    socket.push({
      type: "error",
      code: "too_many_turns",
      conversation_id: "b",
      message: "your free plan runs 1 answer at a time; wait for the running one to finish or stop it",
    });
    let snap = store.getSnapshot();
    expect(snap.chat.messages[0]).toMatchObject({ status: "queued" });
    expect(snap.chat.error).toBeNull();
    expect(snap.chat.streaming).toBe(false);
    // "Stop it and send": the running answer is stopped...
    socket.sent.length = 0;
    store.stopOthers();
    expect(socket.sent).toEqual([{ type: "interrupt", conversation_id: "a" }]);
    // ...and when it ends, the message goes.
    socket.push({ type: "done", seq: 2, conversation_id: "a" });
    expect(socket.sent[1]).toEqual({ type: "message", content: "my question", conversation_id: "b", voice: false });
    snap = store.getSnapshot();
    expect(snap.chat.messages[0]).toMatchObject({ status: "sending" });
    socket.push({ type: "turn", seq: 1, conversation_id: "b" });
    socket.push({ type: "text", seq: 2, conversation_id: "b", delta: "B's answer" });
    socket.push({ type: "done", seq: 3, conversation_id: "b" });
    snap = store.getSnapshot();
    expect(snap.chat.messages[0].status).toBeUndefined();
    expect(text(store)).toEqual(["my question", "B's answer"]);
  });

  it("a cancelled queued message is not sent, and its text goes back to the message box", async () => {
    const { store, socket } = await setup({});
    store.send("later please");
    socket.push({ type: "error", code: "too_many_turns", conversation_id: store.currentId, message: "busy" });
    const key = store.getSnapshot().chat.messages[0].key;
    store.cancelQueued(key);
    expect(store.getSnapshot().chat.messages).toEqual([]);
    expect(store.getSnapshot().draft?.text).toBe("later please");
    socket.sent.length = 0;
    socket.push({ type: "done", seq: 5, conversation_id: "other" });
    expect(socket.sent).toEqual([]);
  });

  it("a refused message keeps its text and is sent again by retry", async () => {
    const { store, socket } = await setup({});
    store.send("important text");
    // An error that names no conversation is about the message waiting.
    socket.push({ type: "error", code: "wake_failed", message: "your workspace could not be started; try again" });
    let m = store.getSnapshot().chat.messages[0];
    expect(m).toMatchObject({ status: "failed", error: { code: "wake_failed" }, request: { content: "important text" } });
    socket.sent.length = 0;
    store.retry(m.key);
    expect(socket.sent).toEqual([{ type: "message", content: "important text", conversation_id: store.currentId, voice: false }]);
    m = store.getSnapshot().chat.messages[0];
    expect(m.status).toBe("sending");
  });
});

describe("ChatStore: Stop with nobody answering", () => {
  it("shows an answer whose turn is gone as cut off once Stop gets no end", async () => {
    const { store, socket } = await setup({
      a: conversation(
        "a",
        [
          { id: "a1", role: "user", content: "count", events: [], complete: true, created_at: "" },
          { id: "a2", role: "assistant", content: "[001]", events: [], complete: false, created_at: "" },
        ],
        { last_seq: 2, running: true },
      ),
    });
    await store.open("a");
    expect(store.getSnapshot().chat.streaming).toBe(true);
    vi.useFakeTimers({ toFake: ["setTimeout"] });
    try {
      store.stop();
      expect(socket.sent).toContainEqual({ type: "interrupt", conversation_id: "a" });
      await vi.advanceTimersByTimeAsync(STOP_GIVE_UP_MS + 1);
      const chat = store.getSnapshot().chat;
      expect(chat.streaming).toBe(false);
      expect(chat.messages[1]).toMatchObject({ complete: true, error: { code: "incomplete" } });
    } finally {
      vi.useRealTimers();
    }
  });
});
