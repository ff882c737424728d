// The agent's questions about network hosts outside the allow-list: the router
// sends `egress_request` to every tab of the user while the sandbox's connection
// waits, and `egress_resolved` when the question ends (answered in any tab,
// expired, or nobody was there to ask). A question also leaves by itself when
// its time is up. No React in here: a subscribe/snapshot store.

import type { ChatConnection } from "./connection";
import type { EgressAnswer, ServerFrame } from "./types";

export interface EgressQuestion {
  id: string;
  host: string;
  port: number;
  /** When the router gives up waiting (ms since the epoch, this tab's clock). */
  expiresAt: number;
}

/** `host:port`, IPv6 literals in brackets. */
export function target(q: { host: string; port: number }): string {
  return q.host.includes(":") ? `[${q.host}]:${q.port}` : `${q.host}:${q.port}`;
}

export class EgressPrompts {
  private questions: EgressQuestion[] = [];
  private timers = new Map<string, ReturnType<typeof setTimeout>>();
  private listeners = new Set<() => void>();
  /** The clock (tests replace it). */
  now: () => number = () => Date.now();

  constructor(private conn: Pick<ChatConnection, "subscribe" | "decideEgress">) {
    conn.subscribe((e) => {
      if (e.kind === "frame") this.onFrame(e.frame);
    });
  }

  subscribe = (f: () => void) => {
    this.listeners.add(f);
    return () => {
      this.listeners.delete(f);
    };
  };

  /** The open questions, oldest first. */
  getSnapshot = () => this.questions;

  private changed(questions: EgressQuestion[]) {
    this.questions = questions;
    for (const f of this.listeners) f();
  }

  onFrame(frame: ServerFrame) {
    if (frame.type === "egress_request") {
      if (this.questions.some((q) => q.id === frame.id)) return;
      const wait = Math.max(0, frame.expires_in_ms);
      this.timers.set(
        frame.id,
        setTimeout(() => this.remove(frame.id), wait),
      );
      this.changed([
        ...this.questions,
        { id: frame.id, host: frame.host, port: frame.port, expiresAt: this.now() + wait },
      ]);
    } else if (frame.type === "egress_resolved") {
      this.remove(frame.id);
    }
  }

  /** Answers question `id`; it leaves this tab at once (the others when the
   * router says it ended). */
  answer(id: string, decision: EgressAnswer) {
    if (!this.questions.some((q) => q.id === id)) return;
    this.conn.decideEgress(id, decision);
    this.remove(id);
  }

  /** Forgets every question (sign-out). */
  clear() {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    if (this.questions.length > 0) this.changed([]);
  }

  private remove(id: string) {
    const t = this.timers.get(id);
    if (t !== undefined) clearTimeout(t);
    this.timers.delete(id);
    if (this.questions.some((q) => q.id === id)) this.changed(this.questions.filter((q) => q.id !== id));
  }
}
