import { describe, expect, it } from "vitest";
import { MemStorage } from "../test/helpers";
import { conversation, flush, setup, text } from "../test/chatHarness";
import { QUEUE_KEY_PREFIX } from "./chatStore";
import type { HistoryMessage } from "./types";

const msg = (id: string, role: "user" | "assistant", content: string, events: unknown[] = []): HistoryMessage => ({
  id,
  role,
  content,
  events,
  complete: true,
  created_at: "",
});

/** A stored conversation of three turns. */
const threeTurns = () =>
  conversation(
    "c",
    [
      msg("u1", "user", "first"),
      msg("a1", "assistant", "one"),
      msg("u2", "user", "second", [{ type: "attachment", id: "f1", filename: "notes.txt" }]),
      msg("a2", "assistant", "two"),
      msg("u3", "user", "third"),
      msg("a3", "assistant", "three"),
    ],
    { last_seq: 9 },
  );

const keyOf = (store: { getSnapshot: () => { chat: { messages: { id?: string; key: string }[] } } }, id: string) =>
  store.getSnapshot().chat.messages.find((m) => m.id === id)!.key;

describe("ChatStore: edit and resend, regenerate", () => {
  it("an edited message replaces it and everything after it, and its answer streams in their place", async () => {
    const { store, socket } = await setup({ c: threeTurns() });
    await store.open("c");
    await flush();
    expect(store.canRewrite()).toBe(true);
    socket.sent.length = 0;
    store.editAndResend(keyOf(store, "u2"), "  second, edited ");
    expect(socket.sent).toEqual([
      { type: "message", content: "second, edited", conversation_id: "c", voice: false, attachments: ["f1"], replaces: "u2" },
    ]);
    expect(text(store)).toEqual(["first", "one", "second, edited<attachment>"]);
    expect(store.canRewrite()).toBe(false);
    socket.push({ type: "turn", seq: 10, conversation_id: "c", prompt_id: "u9" } as never);
    socket.push({ type: "text", seq: 11, conversation_id: "c", delta: "new two" });
    socket.push({ type: "done", seq: 12, conversation_id: "c" });
    expect(text(store)).toEqual(["first", "one", "second, edited<attachment>", "new two"]);
    // The live message has its id now: it can be edited again without a reload.
    const live = store.getSnapshot().chat.messages[2];
    expect(live).toMatchObject({ id: "u9", status: undefined });
    socket.sent.length = 0;
    store.editAndResend(live.key, "again");
    expect(socket.sent[0]).toMatchObject({ content: "again", replaces: "u9" });
  });

  it("editing the first message leaves nothing before the new one; empty text is not sent", async () => {
    const { store, socket } = await setup({ c: threeTurns() });
    await store.open("c");
    await flush();
    socket.sent.length = 0;
    store.editAndResend(keyOf(store, "u1"), "   ");
    expect(socket.sent).toEqual([]);
    expect(text(store)).toHaveLength(6);
    store.editAndResend(keyOf(store, "u1"), "first, edited");
    expect(socket.sent).toEqual([{ type: "message", content: "first, edited", conversation_id: "c", voice: false, replaces: "u1" }]);
    expect(text(store)).toEqual(["first, edited"]);
  });

  it("regenerate asks the last question again, with its attachments, in place of its turn", async () => {
    const stored = threeTurns();
    stored.messages = stored.messages.slice(0, 4);
    const { store, socket } = await setup({ c: stored });
    await store.open("c");
    await flush();
    socket.sent.length = 0;
    // Only the last answer can be regenerated.
    store.regenerate(keyOf(store, "a1"));
    expect(socket.sent).toEqual([]);
    store.regenerate(keyOf(store, "a2"));
    expect(socket.sent).toEqual([
      { type: "message", content: "second", conversation_id: "c", voice: false, attachments: ["f1"], replaces: "u2" },
    ]);
    expect(text(store)).toEqual(["first", "one", "second<attachment>"]);
    expect(store.getSnapshot().chat.streaming).toBe(true);
  });

  it("neither is possible while a turn of the conversation runs", async () => {
    const { store, socket } = await setup({ c: threeTurns() });
    await store.open("c");
    await flush();
    socket.push({ type: "turn", seq: 10, conversation_id: "c" });
    expect(store.canRewrite()).toBe(false);
    socket.sent.length = 0;
    store.editAndResend(keyOf(store, "u1"), "changed");
    store.regenerate(store.getSnapshot().chat.messages.at(-1)!.key);
    expect(socket.sent).toEqual([]);
    socket.push({ type: "done", seq: 11, conversation_id: "c" });
    expect(store.canRewrite()).toBe(true);
  });

  it("a refused replacement shows the stored conversation again, with the refusal", async () => {
    const stored = { c: threeTurns() };
    const { store, socket } = await setup(stored);
    await store.open("c");
    await flush();
    store.editAndResend(keyOf(store, "u2"), "edited");
    expect(text(store)).toHaveLength(3);
    socket.push({ type: "error", code: "cannot_replace", conversation_id: "c", message: "that message can no longer be replaced" });
    await flush();
    const chat = store.getSnapshot().chat;
    expect(text(store)).toEqual(["first", "one", "second<attachment>", "two", "third", "three"]);
    expect(chat.error).toEqual({ code: "cannot_replace", message: "that message can no longer be replaced" });
    expect(chat.streaming).toBe(false);
    expect(store.canRewrite()).toBe(true);
  });
});

describe("ChatStore: queued messages survive a reload", () => {
  it("a queued message is kept per conversation and is back, still waiting and cancellable", async () => {
    const saved = new MemStorage();
    const stored = { a: conversation("a", [msg("a1", "user", "count")]), b: conversation("b", [msg("b1", "user", "hi"), msg("b2", "assistant", "hello")]) };
    {
      const { store, socket } = await setup(stored, saved);
      await store.open("a");
      await flush();
      socket.push({ type: "turn", seq: 1, conversation_id: "a" });
      await store.open("b");
      await flush();
      store.send("waiting question", false);
      socket.push({ type: "error", code: "too_many_turns", conversation_id: "b", message: "busy" });
      expect(store.getSnapshot().chat.messages[2]).toMatchObject({ status: "queued" });
      expect(JSON.parse(saved.getItem(QUEUE_KEY_PREFIX + "b")!)).toEqual([
        { content: "waiting question", voice: false, attachments: [] },
      ]);
    }
    // The page reloads: a new store on the same sessionStorage.
    const { store, socket } = await setup(stored, saved);
    await store.open("b");
    await flush();
    expect(text(store)).toEqual(["hi", "hello", "waiting question"]);
    const queued = store.getSnapshot().chat.messages[2];
    expect(queued.status).toBe("queued");
    // It goes when an answer ends, and is no longer kept.
    socket.sent.length = 0;
    socket.push({ type: "done", seq: 2, conversation_id: "a" });
    expect(socket.sent).toEqual([{ type: "message", content: "waiting question", conversation_id: "b", voice: false }]);
    expect(saved.getItem(QUEUE_KEY_PREFIX + "b")).toBeNull();
  });

  it("a message cancelled after the reload is gone for good", async () => {
    const saved = new MemStorage();
    saved.setItem(QUEUE_KEY_PREFIX + "b", JSON.stringify([{ content: "later", voice: false, attachments: [] }]));
    const { store, socket } = await setup({ b: conversation("b", [msg("b1", "user", "hi"), msg("b2", "assistant", "hello")]) }, saved);
    await store.open("b");
    await flush();
    const queued = store.getSnapshot().chat.messages[2];
    expect(queued).toMatchObject({ status: "queued" });
    store.cancelQueued(queued.key);
    expect(store.getSnapshot().draft?.text).toBe("later");
    expect(saved.getItem(QUEUE_KEY_PREFIX + "b")).toBeNull();
    socket.sent.length = 0;
    socket.push({ type: "done", seq: 5, conversation_id: "other" });
    expect(socket.sent).toEqual([]);
  });
});
