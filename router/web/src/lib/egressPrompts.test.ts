import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ChatConnection, type SocketLike } from "./connection";
import { EgressPrompts, target } from "./egressPrompts";
import type { ServerFrame } from "./types";

class FakeSocket implements SocketLike {
  static all: FakeSocket[] = [];
  readyState = 0;
  sent: unknown[] = [];
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  constructor() {
    FakeSocket.all.push(this);
  }
  send(data: string) {
    this.sent.push(JSON.parse(data));
  }
  close() {
    this.readyState = 3;
  }
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  push(frame: ServerFrame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
}

async function connected() {
  FakeSocket.all = [];
  const conn = new ChatConnection({
    url: "ws://x/ws",
    getToken: async () => "tok",
    createSocket: () => new FakeSocket(),
    backoff: () => 1,
    setTimer: () => 0,
    clearTimer: () => {},
  });
  const prompts = new EgressPrompts(conn);
  conn.start();
  await vi.waitFor(() => expect(FakeSocket.all).toHaveLength(1));
  const socket = FakeSocket.all[0];
  socket.open();
  return { prompts, socket };
}

const ask = (id: string, host = "example.org", port = 443, expires_in_ms = 60_000): ServerFrame => ({
  type: "egress_request",
  id,
  host,
  port,
  expires_in_ms,
});

describe("EgressPrompts", () => {
  beforeEach(() => vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] }));
  afterEach(() => vi.useRealTimers());

  it("shows a request once, however often the router sends it", async () => {
    const { prompts, socket } = await connected();
    socket.push(ask("q1"));
    socket.push(ask("q1"));
    expect(prompts.getSnapshot().map((q) => [q.id, q.host, q.port])).toEqual([["q1", "example.org", 443]]);
  });

  it("sends the answer with the request's id and forgets the question", async () => {
    const { prompts, socket } = await connected();
    socket.push(ask("q1"));
    socket.push(ask("q2", "files.example", 8443));
    prompts.answer("q2", "always");
    expect(socket.sent).toContainEqual({ type: "egress_decision", id: "q2", decision: "always" });
    expect(prompts.getSnapshot().map((q) => q.id)).toEqual(["q1"]);
    // An unknown question is not answered.
    prompts.answer("nope", "once");
    expect(socket.sent.filter((f) => (f as { type: string }).type === "egress_decision")).toHaveLength(1);
  });

  it("drops a question answered in another tab or given up by the router", async () => {
    const { prompts, socket } = await connected();
    socket.push(ask("q1"));
    socket.push(ask("q2"));
    socket.push({ type: "egress_resolved", id: "q1", decision: "once" });
    expect(prompts.getSnapshot().map((q) => q.id)).toEqual(["q2"]);
    socket.push({ type: "egress_resolved", id: "q2", decision: "expired" });
    expect(prompts.getSnapshot()).toEqual([]);
    expect(socket.sent).toEqual([]);
  });

  it("drops a question when its time is up, with no word from the router", async () => {
    const { prompts, socket } = await connected();
    socket.push(ask("q1", "example.org", 443, 5_000));
    vi.advanceTimersByTime(4_999);
    expect(prompts.getSnapshot()).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(prompts.getSnapshot()).toEqual([]);
  });

  it("forgets every question at sign-out", async () => {
    const { prompts, socket } = await connected();
    socket.push(ask("q1"));
    prompts.clear();
    expect(prompts.getSnapshot()).toEqual([]);
  });

  it("writes IPv6 targets in brackets", () => {
    expect(target({ host: "2001:db8::1", port: 443 })).toBe("[2001:db8::1]:443");
    expect(target({ host: "pypi.org", port: 443 })).toBe("pypi.org:443");
  });
});
