// Glue between the connection and the stream reducer, with a subscribe/snapshot
// interface for React's useSyncExternalStore. Still no React in here.
//
// Every conversation shown since the page loaded keeps its own state (messages,
// last seq, streaming, error): the router relays the events of all the user's
// conversations, and each updates its own conversation, never the open one
// unless it is the open one's. A message refused because the plan's answers are
// all running waits in a queue and goes when one ends; the queue is kept in
// sessionStorage, so a reload brings the waiting messages back. A stored user
// message can be edited and sent again, and the last answer regenerated: the new
// message takes the old one's place (`replaces`), and what came after it goes.

import type { Api, StorageLike } from "./api";
import { ChatConnection, type ConnectionState } from "./connection";
import { EgressPrompts } from "./egressPrompts";
import {
  addUserMessage,
  applyFrame,
  emptyChat,
  fromHistory,
  refuse,
  replaceFrom,
  requestOf,
  sendingMessage,
  updateMessage,
  type Attachment,
  type ChatMessage,
  type ChatState,
  type SendRequest,
} from "./stream";
import { RESUME_INCOMPLETE, TOO_MANY_TURNS, hasSeq, type Conversation, type ServerFrame } from "./types";

/** Where a conversation's queued messages are kept (sessionStorage). */
export const QUEUE_KEY_PREFIX = "jarvis.queued.";

function sessionStore(): StorageLike | null {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null;
  }
}

export interface ChatSnapshot {
  /** The open conversation. */
  chat: ChatState;
  connection: ConnectionState;
  workspace: "waking" | "ready" | null;
  loading: boolean;
  loadError: string | null;
  /** Text to put back in the message box (a cancelled or edited message), once per `n`. */
  draft: { text: string; n: number } | null;
}

/** How long Stop waits for the answer's end before showing it as cut off. */
export const STOP_GIVE_UP_MS = 10_000;

/** How often queued messages are tried again when no answer's end was seen. */
export const QUEUE_RETRY_MS = 15_000;

/** A fresh conversation id (the router makes the conversation at its first message). */
export function newConversationId(): string {
  const c = globalThis.crypto;
  if (c?.randomUUID) return c.randomUUID();
  const b = new Uint8Array(16);
  c.getRandomValues(b);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

interface Entry {
  chat: ChatState;
  /** Its history is loaded (or it was made here): frames apply to it. */
  loaded: boolean;
  /** Made here and not yet started on the router. */
  draft: boolean;
}

export class ChatStore {
  private entries = new Map<string, Entry>();
  private current: string = newConversationId();
  private snap: ChatSnapshot = {
    chat: emptyChat(this.current),
    connection: "idle",
    workspace: null,
    loading: false,
    loadError: null,
    draft: null,
  };
  private listeners = new Set<() => void>();
  private frameListeners = new Set<(f: ServerFrame) => void>();
  private loadToken = 0;
  /** Conversations whose message waits for its turn to start, oldest first
   * (an error that names no conversation is about the oldest). */
  private sending: string[] = [];
  /** Queued messages, oldest first. */
  private queue: { conversation: string; key: string }[] = [];
  private queueTimer: ReturnType<typeof setInterval> | null = null;
  private draftN = 0;
  /** The agent's questions about network hosts (`egress_request`). */
  readonly egress: EgressPrompts;

  constructor(
    private api: Api,
    readonly conn: ChatConnection,
    /** Keeps queued messages across a reload (sessionStorage). */
    private saved: StorageLike | null = sessionStore(),
  ) {
    this.entries.set(this.current, { chat: this.snap.chat, loaded: true, draft: true });
    this.egress = new EgressPrompts(conn);
    conn.subscribe((e) => {
      if (e.kind === "state") this.set({ connection: e.state });
      else {
        this.onFrame_(e.frame);
        for (const f of this.frameListeners) f(e.frame);
      }
    });
  }

  subscribe = (f: () => void) => {
    this.listeners.add(f);
    return () => {
      this.listeners.delete(f);
    };
  };

  getSnapshot = () => this.snap;

  /** Every frame, after it was applied (documents, new conversations...). */
  onFrame(f: (frame: ServerFrame) => void): () => void {
    this.frameListeners.add(f);
    return () => {
      this.frameListeners.delete(f);
    };
  }

  /** The open conversation's id (for a new one: the id it will have). */
  get currentId(): string {
    return this.current;
  }

  /** The state of conversation `id`, if shown since the page loaded. */
  chatOf(id: string): ChatState | undefined {
    return this.entries.get(id)?.chat;
  }

  private set(p: Partial<ChatSnapshot>) {
    this.snap = { ...this.snap, ...p };
    for (const f of this.listeners) f();
  }

  /** Changes conversation `id`'s state (the snapshot too when it is open). */
  private update(id: string, f: (c: ChatState) => ChatState) {
    const entry = this.entries.get(id);
    if (!entry) return;
    entry.chat = f(entry.chat);
    if (id === this.current) this.set({ chat: entry.chat });
  }

  private onFrame_(frame: ServerFrame) {
    if (frame.type === "status") {
      this.set({ workspace: frame.state });
      return;
    }
    if (hasSeq(frame)) {
      const id = frame.conversation_id;
      if (frame.type === "turn") this.started(id);
      const entry = this.entries.get(id);
      if (entry?.loaded) {
        entry.draft = false;
        this.update(id, (c) => applyFrame(c, frame));
      }
      if (frame.type === "done" || frame.type === "error") this.turnEnded();
      return;
    }
    if (frame.type !== "error") return;
    const error = { code: frame.code, message: frame.message };
    if (frame.code === RESUME_INCOMPLETE) {
      // Events were missed for good: the stored conversation has them.
      if (frame.conversation_id) this.reload(frame.conversation_id);
      return;
    }
    // A refusal names its conversation; an error that names none is about the
    // oldest message still waiting, if any.
    let id = frame.conversation_id;
    if (!id || !this.sending.includes(id)) {
      if (!id && this.sending.length > 0) id = this.sending[0];
    }
    if (id && this.sending.includes(id)) {
      this.sending.splice(this.sending.indexOf(id), 1);
      this.conn.refused(id);
      const sending = this.entries.get(id)?.chat && sendingMessage(this.entries.get(id)!.chat);
      if (sending?.request?.replaces && frame.code !== TOO_MANY_TURNS) {
        // Nothing was replaced: the stored conversation is as it was.
        this.update(id, (c) => refuse(c, error));
        void this.restore(id, error);
        return;
      }
      if (frame.code === TOO_MANY_TURNS && sending) {
        this.update(id, (c) => {
          const s = updateMessage(c, sending.key, (m) => ({ ...m, status: "queued", error: undefined }));
          return { ...s, streaming: !!sendingMessage(s) };
        });
        this.enqueue(id, sending.key);
      } else this.update(id, (c) => refuse(c, error));
      return;
    }
    if (id && this.entries.has(id)) {
      // Its sandbox went while its answer streamed.
      this.update(id, (c) => refuse(c, error));
      this.turnEnded();
      return;
    }
    this.update(this.current, (c) => ({ ...c, error }));
  }

  /** The turn of `id` started: its message is no longer waiting. */
  private started(id: string) {
    const i = this.sending.indexOf(id);
    if (i >= 0) this.sending.splice(i, 1);
  }

  /** An answer ended: the oldest queued message may go now. */
  private turnEnded() {
    if (this.queue.length > 0) this.sendQueued();
  }

  /** Queues a message, in the order the messages were written. */
  private enqueue(conversation: string, key: string) {
    const order = (k: string) => Number(k.replace(/\D/g, "")) || 0;
    this.queue.push({ conversation, key });
    this.queue.sort((a, b) => order(a.key) - order(b.key));
    this.armQueueTimer();
    this.saveQueue(conversation);
  }

  /** Keeps `conversation`'s queued messages in sessionStorage (none: removed). */
  private saveQueue(conversation: string) {
    if (!this.saved) return;
    const messages = this.entries.get(conversation)?.chat.messages ?? [];
    const requests = this.queue
      .filter((q) => q.conversation === conversation)
      .flatMap((q) => messages.find((m) => m.key === q.key)?.request ?? []);
    try {
      if (requests.length > 0) this.saved.setItem(QUEUE_KEY_PREFIX + conversation, JSON.stringify(requests));
      else this.saved.removeItem(QUEUE_KEY_PREFIX + conversation);
    } catch {
      /* storage full or off: the queue still works until a reload */
    }
  }

  /** The queued messages kept for `conversation` before a reload. */
  private savedQueue(conversation: string): SendRequest[] {
    try {
      const raw = this.saved?.getItem(QUEUE_KEY_PREFIX + conversation);
      const list: unknown = raw ? JSON.parse(raw) : [];
      if (!Array.isArray(list)) return [];
      return list.filter(
        (r): r is SendRequest => !!r && typeof r.content === "string" && Array.isArray(r.attachments),
      );
    } catch {
      return [];
    }
  }

  /** Puts back the messages that waited in `conversation`'s queue before a reload. */
  private restoreQueue(conversation: string) {
    if (this.queue.some((q) => q.conversation === conversation)) return;
    for (const r of this.savedQueue(conversation)) {
      this.update(conversation, (c) => {
        // A queued edit shows in place of what it replaces.
        const from = r.replaces ? c.messages.findIndex((m) => m.id === r.replaces) : -1;
        const kept = from >= 0 ? { ...c, messages: c.messages.slice(0, from) } : c;
        return addUserMessage(kept, r.content, r.attachments, { voice: r.voice, status: "queued", replaces: r.replaces });
      });
      const chat = this.entries.get(conversation)?.chat;
      const message = chat?.messages[chat.messages.length - 1];
      if (message) this.enqueue(conversation, message.key);
    }
  }

  private armQueueTimer() {
    if (this.queueTimer !== null) return;
    this.queueTimer = setInterval(() => {
      if (this.queue.length === 0) {
        if (this.queueTimer !== null) clearInterval(this.queueTimer);
        this.queueTimer = null;
        return;
      }
      this.sendQueued();
    }, QUEUE_RETRY_MS);
  }

  /** Sends the oldest queued message (one at a time: it may be refused again). */
  private sendQueued(): void {
    // One at a time: a message on its way may be refused again.
    if (this.sending.length > 0) return;
    const next = this.queue.shift();
    if (!next) return;
    this.saveQueue(next.conversation);
    const message = this.entries.get(next.conversation)?.chat.messages.find((m) => m.key === next.key);
    if (!message?.request) return this.sendQueued();
    this.update(next.conversation, (c) => ({
      ...updateMessage(c, next.key, (m) => ({ ...m, status: "sending", error: undefined })),
      streaming: true,
    }));
    this.transmit(next.conversation, message);
  }

  private transmit(id: string, message: ChatMessage) {
    const r = message.request;
    if (!r) return;
    this.sending.push(id);
    // Voice always explicit: the toggle may turn voice off although the saved setting is on.
    const extra: { voice?: boolean; attachments?: string[]; replaces?: string } = { voice: r.voice };
    if (r.attachments.length > 0) extra.attachments = r.attachments.map((a) => a.id);
    if (r.replaces) extra.replaces = r.replaces;
    this.conn.sendMessage(id, r.content, extra);
  }

  /** Shows conversation `id` (null: a new one), loading its history. */
  async open(id: string | null) {
    if (id === null) {
      const cur = this.entries.get(this.current);
      if (cur?.draft && cur.chat.messages.length === 0) return;
      this.loadToken++;
      this.current = newConversationId();
      const chat = emptyChat(this.current);
      this.entries.set(this.current, { chat, loaded: true, draft: true });
      this.set({ chat, loading: false, loadError: null });
      return;
    }
    if (id === this.current) return;
    const token = ++this.loadToken;
    this.current = id;
    const entry = this.entries.get(id);
    if (entry?.loaded) {
      // Shown before: as it is now (its frames kept it up to date).
      this.set({ chat: entry.chat, loading: false, loadError: null });
      const c = entry.chat;
      const busy = c.streaming || c.messages.some((m) => m.status !== undefined) || entry.draft;
      if (!busy) await this.load(id, token, false);
      return;
    }
    const chat = emptyChat(id);
    this.entries.set(id, { chat, loaded: false, draft: false });
    this.set({ chat, loading: true, loadError: null });
    await this.load(id, token, true);
  }

  /** Loads `id`'s stored history and follows it from there on. */
  private async load(id: string, token: number, showErrors: boolean) {
    try {
      const conv = await this.api.get<Conversation>(`/api/conversations/${encodeURIComponent(id)}`);
      if (token !== this.loadToken) {
        // Another conversation was opened meanwhile; keep this one unloaded.
        return;
      }
      const entry = this.entries.get(id);
      if (!entry) return;
      const live = entry.chat;
      if (entry.loaded && (live.streaming || live.messages.some((m) => m.status !== undefined))) return;
      const history = fromHistory(conv);
      entry.chat = history;
      entry.loaded = true;
      entry.draft = false;
      if (id === this.current) this.set({ chat: history, loading: false, loadError: null });
      // Exactly the events after what the history holds, then the live ones.
      this.conn.resume(id, history.lastSeq);
      this.restoreQueue(id);
    } catch (e) {
      if (token !== this.loadToken || !showErrors) return;
      this.set({ loading: false, loadError: e instanceof Error ? e.message : String(e) });
    }
  }

  /** Loads `id` again from the stored history (events were missed for good). */
  private reload(id: string) {
    const entry = this.entries.get(id);
    if (!entry?.loaded) return;
    entry.chat = { ...entry.chat, streaming: false };
    void this.load(id, this.loadToken, false);
  }

  /**
   * A message meant to replace a stored one was refused: nothing was replaced, so
   * the stored conversation is shown again, with the refusal.
   */
  private async restore(id: string, error: { code: string; message: string }) {
    try {
      const conv = await this.api.get<Conversation>(`/api/conversations/${encodeURIComponent(id)}`);
      const entry = this.entries.get(id);
      if (!entry) return;
      const history = { ...fromHistory(conv), error };
      entry.chat = history;
      entry.loaded = true;
      if (id === this.current) this.set({ chat: history });
      this.conn.resume(id, history.lastSeq);
    } catch {
      // Not reachable now: the refused message stays, with Retry.
    }
  }

  /** Forgets everything shown (sign-out). */
  reset() {
    this.loadToken++;
    this.egress.clear();
    if (this.saved) {
      for (const q of this.queue) {
        try {
          this.saved.removeItem(QUEUE_KEY_PREFIX + q.conversation);
        } catch {
          /* nothing kept */
        }
      }
    }
    this.entries.clear();
    this.sending = [];
    this.queue = [];
    if (this.queueTimer !== null) clearInterval(this.queueTimer);
    this.queueTimer = null;
    this.conn.forgetAll();
    this.current = newConversationId();
    const chat = emptyChat(this.current);
    this.entries.set(this.current, { chat, loaded: true, draft: true });
    this.set({ chat, loading: false, loadError: null, draft: null });
  }

  /** Conversations whose answer is running, as far as seen here. */
  runningConversations(): string[] {
    return this.conn.activeConversations().filter((id) => !this.sending.includes(id));
  }

  send(content: string, voice = false, attachments: Attachment[] = []) {
    const id = this.current;
    // Behind a queued message of this conversation, this one waits too.
    const queued = this.queue.some((q) => q.conversation === id);
    this.update(id, (c) => addUserMessage(c, content, attachments, { voice, status: queued ? "queued" : "sending" }));
    const chat = this.entries.get(id)?.chat;
    const message = chat?.messages[chat.messages.length - 1];
    if (!message) return;
    if (queued) {
      this.enqueue(id, message.key);
      return;
    }
    this.transmit(id, message);
  }

  /** Sends a refused message again; for an answer that ended in an error, its question. */
  retry(key: string) {
    const id = this.current;
    const messages = this.entries.get(id)?.chat.messages ?? [];
    const index = messages.findIndex((m) => m.key === key);
    const message = messages[index];
    if (message?.role === "assistant" && message.error) {
      const question = messages
        .slice(0, index)
        .reverse()
        .find((m) => m.role === "user");
      if (!question) return;
      const r = requestOf(question);
      this.send(r.content, r.voice, r.attachments);
      return;
    }
    if (!message?.request || message.status !== "failed") return;
    this.update(id, (c) => ({
      ...updateMessage(c, key, (m) => ({ ...m, status: "sending", error: undefined })),
      streaming: true,
      error: null,
    }));
    this.transmit(id, message);
  }

  /** Takes a refused or queued message back into the message box. */
  edit(key: string) {
    const id = this.current;
    const message = this.entries.get(id)?.chat.messages.find((m) => m.key === key);
    if (!message?.request || (message.status !== "failed" && message.status !== "queued")) return;
    this.queue = this.queue.filter((q) => q.key !== key);
    this.update(id, (c) => updateMessage(c, key, () => null));
    this.saveQueue(id);
    this.set({ draft: { text: message.request.content, n: ++this.draftN } });
  }

  /** Whether the open conversation's messages can be edited or its answer
   * regenerated now: no turn of it runs and no message of it waits. */
  canRewrite(): boolean {
    const id = this.current;
    const chat = this.entries.get(id)?.chat;
    if (!chat || chat.streaming || this.conn.isActive(id) || this.sending.includes(id)) return false;
    return !chat.messages.some((m) => m.status === "sending" || m.status === "queued");
  }

  /** Sends `content` in place of the stored user message `key` and everything after it. */
  private replace(key: string, content: string, voice: boolean, attachments: Attachment[]) {
    const id = this.current;
    if (!this.canRewrite()) return;
    const before = this.entries.get(id)?.chat;
    this.update(id, (c) => replaceFrom(c, key, content, attachments, { voice }));
    const chat = this.entries.get(id)?.chat;
    if (!chat || chat === before) return;
    this.transmit(id, chat.messages[chat.messages.length - 1]);
  }

  /** Asks the question of the answer `key` (the last one) again, in place of that turn. */
  regenerate(key: string) {
    const messages = this.entries.get(this.current)?.chat.messages ?? [];
    const index = messages.findIndex((m) => m.key === key);
    if (index < 0 || messages[index].role !== "assistant" || index !== messages.length - 1) return;
    const question = messages
      .slice(0, index)
      .reverse()
      .find((m) => m.role === "user");
    if (!question) return;
    const r = requestOf(question);
    this.replace(question.key, r.content, r.voice, r.attachments);
  }

  /** Sends the stored user message `key` again with new text (its attachments kept),
   * in place of it and of everything after it. */
  editAndResend(key: string, content: string) {
    const text = content.trim();
    const message = this.entries.get(this.current)?.chat.messages.find((m) => m.key === key);
    if (!text || !message || message.role !== "user") return;
    const r = requestOf(message);
    this.replace(key, text, r.voice, r.attachments);
  }

  /** Cancels a queued message: it is not sent, and its text goes back to the message box. */
  cancelQueued(key: string) {
    this.edit(key);
  }

  /** Stops the running answer(s) so that the queued message goes at once. */
  stopOthers() {
    const running = this.runningConversations();
    if (running.length === 0) this.conn.interrupt();
    for (const id of running) this.conn.interrupt(id);
  }

  /** Stops the open conversation's answer. If nothing at all comes back (its
   * sandbox went without a word), the answer is shown as cut off after a while. */
  stop() {
    const id = this.current;
    this.conn.interrupt(id);
    const before = this.entries.get(id)?.chat.lastSeq;
    setTimeout(() => {
      const chat = this.entries.get(id)?.chat;
      if (!chat?.streaming || chat.lastSeq !== before || sendingMessage(chat)) return;
      this.update(id, (c) => refuse(c, { code: "incomplete", message: "This answer was cut off." }));
    }, STOP_GIVE_UP_MS);
  }
}
