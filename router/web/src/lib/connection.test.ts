import { describe, expect, it } from "vitest";
import { ChatConnection, type SocketLike } from "./connection";
import { applyFrame, emptyChat, type ChatState } from "./stream";
import type { ServerFrame } from "./types";

class FakeSocket implements SocketLike {
  static all: FakeSocket[] = [];
  readyState = 0;
  sent: unknown[] = [];
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  constructor(
    public url: string,
    public protocols: string[],
  ) {
    FakeSocket.all.push(this);
  }
  send(data: string) {
    this.sent.push(JSON.parse(data));
  }
  close() {
    this.readyState = 3;
  }
  // test side
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  push(frame: ServerFrame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  drop() {
    this.readyState = 3;
    this.onclose?.({ code: 1006 });
  }
}

const flush = () => new Promise((r) => setTimeout(r, 0));

function setup() {
  FakeSocket.all = [];
  const timers: (() => void)[] = [];
  const conn = new ChatConnection({
    url: "ws://x/ws",
    getToken: async () => "tok",
    createSocket: (u, p) => new FakeSocket(u, p),
    backoff: () => 1,
    setTimer: (f) => timers.push(f),
    clearTimer: () => {},
  });
  let chat: ChatState = emptyChat();
  const frames: ServerFrame[] = [];
  conn.subscribe((e) => {
    if (e.kind === "frame") {
      frames.push(e.frame);
      if ((e.frame as { conversation_id?: string }).conversation_id !== "c9" && e.frame.type !== "status") return;
      chat = applyFrame(chat, e.frame);
    }
  });
  return { conn, timers, frames, chat: () => chat };
}

describe("ChatConnection", () => {
  it("authenticates with the jarvis and bearer subprotocols", async () => {
    const { conn } = setup();
    conn.start();
    await flush();
    expect(FakeSocket.all[0].protocols).toEqual(["jarvis", "bearer.tok"]);
  });

  it("queues a message until the socket opens", async () => {
    const { conn } = setup();
    conn.start();
    conn.sendMessage("c1", "hello");
    await flush();
    const s = FakeSocket.all[0];
    expect(s.sent).toEqual([]);
    s.open();
    expect(s.sent).toEqual([{ type: "message", content: "hello", conversation_id: "c1" }]);
  });

  it("after a drop mid-turn reconnects, resumes after the last seq and drops duplicates", async () => {
    const { conn, timers, frames, chat } = setup();
    conn.start();
    await flush();
    const first = FakeSocket.all[0];
    first.open();
    conn.sendMessage("c9", "write a poem");
    first.push({ type: "status", state: "ready" });
    first.push({ type: "turn", seq: 1, conversation_id: "c9" });
    first.push({ type: "text", seq: 2, conversation_id: "c9", delta: "Roses " });
    first.push({ type: "text", seq: 3, conversation_id: "c9", delta: "are " });
    first.drop();
    expect(conn.state).toBe("reconnecting");
    expect(timers).toHaveLength(1);
    timers.shift()!();
    await flush();
    const second = FakeSocket.all[1];
    expect(second).toBeDefined();
    second.open();
    expect(second.sent[0]).toEqual({ type: "resume", conversation_id: "c9", after_seq: 3 });
    // The router replays from an older point: already-seen frames are dropped.
    second.push({ type: "text", seq: 2, conversation_id: "c9", delta: "Roses " });
    second.push({ type: "text", seq: 3, conversation_id: "c9", delta: "are " });
    second.push({ type: "text", seq: 4, conversation_id: "c9", delta: "red." });
    second.push({ type: "done", seq: 5, conversation_id: "c9" });
    expect(frames.filter((f) => f.type === "text").map((f) => (f as { delta: string }).delta)).toEqual(["Roses ", "are ", "red."]);
    const answer = chat().messages[chat().messages.length - 1];
    expect(answer.parts).toEqual([{ kind: "text", text: "Roses are red." }]);
    expect(answer.complete).toBe(true);
    expect(conn.isActive("c9")).toBe(false);
  });

  it("numbers each conversation on its own: frames of two conversations interleaved all pass", async () => {
    const { conn, frames } = setup();
    conn.start();
    await flush();
    const s = FakeSocket.all[0];
    s.open();
    s.push({ type: "turn", seq: 7, conversation_id: "a" });
    s.push({ type: "turn", seq: 1, conversation_id: "b" });
    s.push({ type: "text", seq: 8, conversation_id: "a", delta: "A1" });
    s.push({ type: "text", seq: 2, conversation_id: "b", delta: "B1" });
    s.push({ type: "text", seq: 9, conversation_id: "a", delta: "A2" });
    expect(frames.map((f) => (f as { seq: number }).seq)).toEqual([7, 1, 8, 2, 9]);
    expect(conn.lastSeq("a")).toBe(9);
    expect(conn.lastSeq("b")).toBe(2);
    expect(conn.activeConversations().sort()).toEqual(["a", "b"]);
  });

  it("after a reload resumes from the stored seq: live frames past it wait for the replay, nothing is lost or repeated", async () => {
    const { conn, frames } = setup();
    conn.start();
    await flush();
    const s = FakeSocket.all[0];
    s.open();
    // Live frames of a running turn arrive before the history is loaded...
    s.push({ type: "text", seq: 70, conversation_id: "a", delta: "[070]" });
    // ...the history holds up to 60: resume after it.
    conn.resume("a", 60);
    expect(s.sent).toEqual([{ type: "resume", conversation_id: "a", after_seq: 60 }]);
    frames.length = 0;
    // A live frame sent before the router saw the resume is past a gap: dropped.
    s.push({ type: "text", seq: 71, conversation_id: "a", delta: "[071]" });
    expect(frames).toEqual([]);
    // The replay: 61… then the live ones.
    for (let n = 61; n <= 72; n++) s.push({ type: "text", seq: n, conversation_id: "a", delta: `[0${n}]` });
    expect(frames.map((f) => (f as { delta: string }).delta).join("")).toBe(
      Array.from({ length: 12 }, (_, i) => `[0${61 + i}]`).join(""),
    );
    // No second resume was asked for.
    expect(s.sent).toHaveLength(1);
  });

  it("a frame past a gap asks for the missed ones (once)", async () => {
    const { conn, frames } = setup();
    conn.start();
    await flush();
    const s = FakeSocket.all[0];
    s.open();
    s.push({ type: "turn", seq: 1, conversation_id: "a" });
    s.push({ type: "text", seq: 4, conversation_id: "a", delta: "x" });
    s.push({ type: "text", seq: 5, conversation_id: "a", delta: "y" });
    expect(frames).toHaveLength(1);
    expect(s.sent).toEqual([{ type: "resume", conversation_id: "a", after_seq: 1 }]);
  });

  it("sends the conversation id, interrupts that conversation, and resumes nothing it did not follow", async () => {
    const { conn } = setup();
    conn.start();
    await flush();
    const s = FakeSocket.all[0];
    s.open();
    expect(s.sent).toEqual([]);
    conn.sendMessage("c1", "hi");
    conn.interrupt("c1");
    conn.interrupt();
    expect(s.sent).toEqual([
      { type: "message", content: "hi", conversation_id: "c1" },
      { type: "interrupt", conversation_id: "c1" },
      { type: "interrupt" },
    ]);
  });

  it("retries when no token is available yet, and stops for good on stop()", async () => {
    FakeSocket.all = [];
    const timers: (() => void)[] = [];
    let token: string | null = null;
    const conn = new ChatConnection({
      url: "ws://x/ws",
      getToken: async () => token,
      createSocket: (u, p) => new FakeSocket(u, p),
      backoff: () => 1,
      setTimer: (f) => timers.push(f),
      clearTimer: () => {},
    });
    conn.start();
    await flush();
    expect(FakeSocket.all).toHaveLength(0);
    token = "t2";
    timers.shift()!();
    await flush();
    expect(FakeSocket.all[0].protocols).toContain("bearer.t2");
    conn.stop();
    FakeSocket.all[0].drop();
    expect(timers).toHaveLength(0);
    expect(conn.state).toBe("closed");
  });
});
