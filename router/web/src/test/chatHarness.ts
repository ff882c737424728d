// A ChatStore on a fake socket and a fake API serving stored conversations, for
// the store's tests.
import type { Api, StorageLike } from "../lib/api";
import { ChatStore } from "../lib/chatStore";
import { ChatConnection, type SocketLike } from "../lib/connection";
import type { Conversation, ServerFrame } from "../lib/types";
import { MemStorage } from "./helpers";

export class FakeSocket implements SocketLike {
  readyState = 0;
  sent: Record<string, unknown>[] = [];
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
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

export const flush = () => new Promise((r) => setTimeout(r, 0));

export const conversation = (id: string, messages: Conversation["messages"], extra: Partial<Conversation> = {}): Conversation => ({
  id,
  title: id,
  created_at: "",
  updated_at: "",
  messages,
  last_seq: 0,
  running: false,
  ...extra,
});

/** `stored`: what `GET /api/conversations/{id}` answers (changeable); `saved`: sessionStorage. */
export async function setup(stored: Record<string, Conversation>, saved: StorageLike = new MemStorage()) {
  const sockets: FakeSocket[] = [];
  const conn = new ChatConnection({
    url: "ws://x/ws",
    getToken: async () => "tok",
    createSocket: () => {
      const s = new FakeSocket();
      sockets.push(s);
      return s;
    },
    backoff: () => 1,
    setTimer: () => 0,
    clearTimer: () => {},
  });
  const api = {
    get: async (path: string) => {
      const id = decodeURIComponent(path.split("/").pop() ?? "");
      if (!stored[id]) throw new Error("not found");
      return structuredClone(stored[id]);
    },
  } as unknown as Api;
  const store = new ChatStore(api, conn, saved);
  conn.start();
  await flush();
  sockets[0].open();
  return { store, conn, socket: sockets[0], sockets, saved };
}

export const text = (store: ChatStore) =>
  store
    .getSnapshot()
    .chat.messages.map((m) => m.parts.map((p) => (p.kind === "text" ? p.text : `<${p.kind}>`)).join(""));
