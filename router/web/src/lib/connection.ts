// One WebSocket to the router's /ws, kept open: reconnects with back-off. The
// router relays the events of every conversation of the user, each numbered
// within its conversation (`seq`, one after another): this keeps, per
// conversation, the last seq passed on, drops what was already passed on, and
// when a frame skips numbers (something was missed) drops it and resumes that
// conversation after the last one passed on. After a drop it resumes every
// conversation whose turn runs. No React here, so tests drive it with a fake socket.

import { RESUME_INCOMPLETE, hasSeq, parseFrame, type ClientFrame, type EgressAnswer, type ServerFrame } from "./types";

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

/** What the connection knows of one conversation's numbering. */
interface Followed {
  /** The highest seq passed on (or the one a resume starts after). */
  lastSeq: number;
  /** `lastSeq` is a real baseline: the next frame must be `lastSeq + 1`. */
  known: boolean;
  /** A resume was sent and its replay has not started yet (when). */
  resumingSince: number | null;
  /** A message was sent, or a turn runs, and its end has not come. */
  active: boolean;
}

/** A resume whose replay has not come after this long may be asked again. */
export const RESUME_RETRY_MS = 10_000;

export class ChatConnection {
  private opts: Required<ConnectionOptions>;
  private socket: SocketLike | null = null;
  private listeners = new Set<(e: ConnectionEvent) => void>();
  private queue: ClientFrame[] = [];
  private timer: unknown = null;
  private stopped = true;
  private attempt = 0;
  private followed = new Map<string, Followed>();
  state: ConnectionState = "idle";
  /** The clock (tests replace it). */
  now: () => number = () => Date.now();

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

  private entry(id: string): Followed {
    let f = this.followed.get(id);
    if (!f) {
      f = { lastSeq: 0, known: false, resumingSince: null, active: false };
      this.followed.set(id, f);
    }
    return f;
  }

  /** The highest seq of `id` passed on (0: none). */
  lastSeq(id: string): number {
    return this.followed.get(id)?.lastSeq ?? 0;
  }

  /** Whether a turn of `id` runs (or a message to it waits), as far as seen here. */
  isActive(id: string): boolean {
    return this.followed.get(id)?.active ?? false;
  }

  /** Conversations whose turn runs, as far as seen here. */
  activeConversations(): string[] {
    return [...this.followed].filter(([, f]) => f.active).map(([id]) => id);
  }

  /**
   * Shows `id` from `afterSeq` on: asks the router for exactly its events above
   * `afterSeq` (then the live ones). Frames of it not following on from
   * `afterSeq` are dropped meanwhile (they come again in the replay).
   */
  resume(id: string, afterSeq: number) {
    const f = this.entry(id);
    f.lastSeq = afterSeq;
    f.known = true;
    f.resumingSince = this.now();
    this.sendNow({ type: "resume", conversation_id: id, after_seq: afterSeq });
  }

  /** Forgets every conversation (sign-out). */
  forgetAll() {
    this.followed.clear();
    this.queue = [];
  }

  sendMessage(conversationId: string, content: string, extra: { voice?: boolean; attachments?: string[] } = {}) {
    this.entry(conversationId).active = true;
    this.send({ type: "message", content, conversation_id: conversationId, ...extra });
  }

  /** Stops the running answer of `conversationId` (of every conversation without one). */
  interrupt(conversationId?: string) {
    this.send(conversationId ? { type: "interrupt", conversation_id: conversationId } : { type: "interrupt" });
  }

  /** Answers the egress question `id` (dropped when offline: the question
   * expires, and a tab that connects is asked again while it is open). */
  decideEgress(id: string, decision: EgressAnswer) {
    this.sendNow({ type: "egress_decision", id, decision });
  }

  /** A message to `id` was refused before its turn started. */
  refused(id: string) {
    const f = this.followed.get(id);
    if (f) f.active = false;
  }

  private send(frame: ClientFrame) {
    if (this.socket && this.socket.readyState === OPEN && this.state === "open") {
      this.socket.send(JSON.stringify(frame));
    } else {
      this.queue.push(frame);
    }
  }

  /** A resume goes now or at the next open (which resumes what it must anyway). */
  private sendNow(frame: ClientFrame) {
    if (this.socket && this.socket.readyState === OPEN && this.state === "open") {
      this.socket.send(JSON.stringify(frame));
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
      // Resume first: what we missed of each running turn comes back after its lastSeq.
      // (A conversation whose message has not gone yet has nothing to resume.)
      const unsent = new Set(this.queue.map((f) => (f.type === "message" ? f.conversation_id : undefined)));
      for (const [id, f] of this.followed) {
        if (!f.active && f.resumingSince === null) continue;
        if (unsent.has(id) && f.resumingSince === null) continue;
        f.resumingSince = this.now();
        socket.send(JSON.stringify({ type: "resume", conversation_id: id, after_seq: f.lastSeq }));
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
      const id = frame.conversation_id;
      const f = this.entry(id);
      if (frame.seq <= f.lastSeq) return; // already passed on (a replay of it)
      if (f.known && frame.seq > f.lastSeq + 1) {
        // Something before it was missed: its replay brings it, in order.
        const since = f.resumingSince;
        if (since === null || this.now() - since > RESUME_RETRY_MS) this.resume(id, f.lastSeq);
        return;
      }
      f.lastSeq = frame.seq;
      f.known = true;
      f.resumingSince = null;
      if (frame.type === "turn") f.active = true;
      if (frame.type === "done" || frame.type === "error") f.active = false;
    } else if (frame.type === "error" && frame.conversation_id) {
      const f = this.entry(frame.conversation_id);
      if (frame.code === RESUME_INCOMPLETE) {
        // The replay starts past a gap: take its first frame as it comes.
        f.known = false;
        f.resumingSince = null;
      } else {
        f.active = false;
      }
    }
    this.emit({ kind: "frame", frame });
  }
}
