// One WebSocket to the router's /ws, kept open: reconnects with back-off, and
// after a drop resumes the conversation after the last seq it saw, dropping any
// frame it has already seen. No React here, so tests drive it with a fake socket.

import { hasSeq, parseFrame, type ClientFrame, type ServerFrame } from "./types";

/** The part of the browser's WebSocket this module uses. */
export interface SocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type SocketFactory = (url: string, protocols: string[]) => SocketLike;

export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export type ConnectionEvent =
  | { kind: "frame"; frame: ServerFrame }
  | { kind: "state"; state: ConnectionState; attempt: number };

export interface ConnectionOptions {
  url: string;
  /** The current access token (refreshed by the caller when needed). */
  getToken: () => Promise<string | null>;
  createSocket?: SocketFactory;
  /** Delay before reconnect attempt `n` (1-based), in ms. */
  backoff?: (attempt: number) => number;
  setTimer?: (f: () => void, ms: number) => unknown;
  clearTimer?: (t: unknown) => void;
}

const OPEN = 1;

export const defaultBackoff = (attempt: number) =>
  Math.min(10_000, 500 * 2 ** Math.min(attempt - 1, 5)) * (0.75 + Math.random() * 0.5);

export function wsUrl(loc: { protocol: string; host: string } = window.location): string {
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws`;
}

export class ChatConnection {
  private opts: Required<ConnectionOptions>;
  private socket: SocketLike | null = null;
  private listeners = new Set<(e: ConnectionEvent) => void>();
  private queue: ClientFrame[] = [];
  private timer: unknown = null;
  private stopped = true;
  private attempt = 0;
  state: ConnectionState = "idle";
  /** The conversation being followed, and the highest seq seen in it. */
  conversationId: string | null = null;
  lastSeq = 0;
  /** A turn was started and its `done` (or an error) has not arrived yet. */
  turnActive = false;

  constructor(opts: ConnectionOptions) {
    this.opts = {
      createSocket: (url, protocols) => new WebSocket(url, protocols) as unknown as SocketLike,
      backoff: defaultBackoff,
      setTimer: (f, ms) => setTimeout(f, ms),
      clearTimer: (t) => clearTimeout(t as ReturnType<typeof setTimeout>),
      ...opts,
    };
  }

  subscribe(f: (e: ConnectionEvent) => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  private emit(e: ConnectionEvent) {
    for (const f of this.listeners) f(e);
  }

  private setState(state: ConnectionState) {
    this.state = state;
    this.emit({ kind: "state", state, attempt: this.attempt });
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    void this.connect();
  }

  stop() {
    this.stopped = true;
    if (this.timer !== null) this.opts.clearTimer(this.timer);
    this.timer = null;
    const s = this.socket;
    this.socket = null;
    if (s) {
      s.onclose = s.onmessage = s.onerror = s.onopen = null;
      s.close(1000, "bye");
    }
    this.setState("closed");
  }

  /** Follows `id` (null: a new conversation); seq numbering restarts. */
  follow(id: string | null) {
    if (id === this.conversationId) return;
    this.conversationId = id;
    this.lastSeq = 0;
    this.turnActive = false;
  }

  sendMessage(content: string, extra: { voice?: boolean; attachments?: string[] } = {}) {
    const frame: ClientFrame = { type: "message", content, ...extra };
    if (this.conversationId) frame.conversation_id = this.conversationId;
    this.turnActive = true;
    this.send(frame);
  }

  interrupt() {
    this.send({ type: "interrupt" });
  }

  private send(frame: ClientFrame) {
    if (this.socket && this.socket.readyState === OPEN && this.state === "open") {
      this.socket.send(JSON.stringify(frame));
    } else {
      this.queue.push(frame);
    }
  }

  private async connect() {
    if (this.stopped) return;
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
    let token: string | null = null;
    try {
      token = await this.opts.getToken();
    } catch {
      token = null;
    }
    if (this.stopped) return;
    if (!token) {
      this.scheduleReconnect();
      return;
    }
    let socket: SocketLike;
    try {
      socket = this.opts.createSocket(this.opts.url, ["jarvis", `bearer.${token}`]);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      if (this.socket !== socket) return;
      this.attempt = 0;
      this.setState("open");
      // Resume first: anything of the current turn we missed comes back after lastSeq.
      if (this.conversationId && (this.turnActive || this.lastSeq > 0)) {
        socket.send(
          JSON.stringify({ type: "resume", conversation_id: this.conversationId, after_seq: this.lastSeq }),
        );
      }
      const queued = this.queue;
      this.queue = [];
      for (const f of queued) socket.send(JSON.stringify(f));
    };
    socket.onmessage = (ev) => {
      if (this.socket !== socket) return;
      const frame = parseFrame(ev.data);
      if (frame) this.handle(frame);
    };
    socket.onerror = () => {
      /* onclose follows */
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.scheduleReconnect();
    };
  }

  private scheduleReconnect() {
    if (this.stopped) return;
    this.attempt += 1;
    this.setState("reconnecting");
    this.timer = this.opts.setTimer(() => {
      this.timer = null;
      void this.connect();
    }, this.opts.backoff(this.attempt));
  }

  private handle(frame: ServerFrame) {
    if (hasSeq(frame)) {
      if (frame.type === "turn" && frame.conversation_id !== this.conversationId) {
        this.conversationId = frame.conversation_id;
        this.lastSeq = 0;
      }
      if (frame.seq <= this.lastSeq) return; // a duplicate after resume
      this.lastSeq = frame.seq;
      if (frame.type === "turn") this.turnActive = true;
      if (frame.type === "done") this.turnActive = false;
    } else if (frame.type === "error") {
      this.turnActive = false;
    }
    this.emit({ kind: "frame", frame });
  }
}
