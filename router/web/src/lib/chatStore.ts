// Glue between the connection and the stream reducer, with a subscribe/snapshot
// interface for React's useSyncExternalStore. Still no React in here.

import type { Api } from "./api";
import { ChatConnection, type ConnectionState } from "./connection";
import { addUserMessage, applyFrame, emptyChat, fromHistory, type Attachment, type ChatState } from "./stream";
import type { Conversation, ServerFrame } from "./types";

export interface ChatSnapshot {
  chat: ChatState;
  connection: ConnectionState;
  loading: boolean;
  loadError: string | null;
}

export class ChatStore {
  private snap: ChatSnapshot = { chat: emptyChat(), connection: "idle", loading: false, loadError: null };
  private listeners = new Set<() => void>();
  private frameListeners = new Set<(f: ServerFrame) => void>();
  private loadToken = 0;

  constructor(
    private api: Api,
    readonly conn: ChatConnection,
  ) {
    conn.subscribe((e) => {
      if (e.kind === "state") this.set({ connection: e.state });
      else {
        this.set({ chat: applyFrame(this.snap.chat, e.frame) });
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

  private set(p: Partial<ChatSnapshot>) {
    this.snap = { ...this.snap, ...p };
    for (const f of this.listeners) f();
  }

  /** Shows conversation `id` (null: a new one), loading its history. */
  async open(id: string | null) {
    if (id !== null && id === this.snap.chat.conversationId) return;
    const token = ++this.loadToken;
    this.conn.follow(id);
    this.set({ chat: emptyChat(id), loading: id !== null, loadError: null });
    if (id === null) return;
    try {
      const conv = await this.api.get<Conversation>(`/api/conversations/${encodeURIComponent(id)}`);
      if (token !== this.loadToken) return;
      const history = fromHistory(conv);
      // Keep anything that streamed in while the history loaded.
      const live = this.snap.chat;
      this.set({
        chat: { ...history, messages: [...history.messages, ...live.messages], lastSeq: live.lastSeq, streaming: live.streaming, workspace: live.workspace },
        loading: false,
      });
    } catch (e) {
      if (token !== this.loadToken) return;
      this.set({ loading: false, loadError: e instanceof Error ? e.message : String(e) });
    }
  }

  /** Forgets everything shown (sign-out). */
  reset() {
    this.loadToken++;
    this.conn.follow(null);
    this.set({ chat: emptyChat(), loading: false, loadError: null });
  }

  send(content: string, voice = false, attachments: Attachment[] = []) {
    this.set({ chat: addUserMessage(this.snap.chat, content, attachments) });
    // Voice always explicit: the toggle may turn voice off although the saved setting is on.
    const extra: { voice?: boolean; attachments?: string[] } = { voice };
    if (attachments.length > 0) extra.attachments = attachments.map((a) => a.id);
    this.conn.sendMessage(content, extra);
  }

  stop() {
    this.conn.interrupt();
  }
}
