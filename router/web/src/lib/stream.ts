// The chat stream as plain data: frames from the router fold into a list of
// messages. Pure functions only, so it is easy to test and to replay.

import { isNumbered, type Conversation, type ServerFrame } from "./types";
import type { VoiceClip } from "./voiceQueue";

export type Part =
  | { kind: "text"; text: string }
  | {
      kind: "tool";
      id: string;
      name: string;
      input: unknown;
      result?: { content: unknown; isError: boolean };
    }
  | { kind: "document"; id: string; filename: string }
  | { kind: "attachment"; id: string; filename: string };

/** An uploaded file a message names. */
export interface Attachment {
  id: string;
  filename: string;
}

/** What a user message sent from here is waiting for (none: it was answered). */
export type SendStatus =
  /** Sent; its turn has not started yet. */
  | "sending"
  /** The plan's answers are all running: it goes when one ends. */
  | "queued"
  /** Refused (its `error` says why): it can be sent again. */
  | "failed";

/** What a user message sent from here asked for, to send it again. */
export interface SendRequest {
  content: string;
  voice: boolean;
  attachments: Attachment[];
  /** The id of the user message this one takes the place of (with all after it). */
  replaces?: string;
}

export interface ChatMessage {
  key: string;
  /** The router's id of a user message (from the history, or its turn's
   * `prompt_id`): it can be edited, and its answer regenerated, with it. */
  id?: string;
  role: "user" | "assistant";
  parts: Part[];
  /** The answer's spoken sentences, in order (and any voice error). */
  voice?: VoiceClip[];
  complete: boolean;
  usage?: { input_tokens: number; output_tokens: number };
  error?: { code: string; message: string };
  /** An answer the user stopped (before its first word: no bubble, only a note). */
  stopped?: boolean;
  /** A user message sent from here and not answered yet. */
  status?: SendStatus;
  request?: SendRequest;
}

/** One conversation as shown. */
export interface ChatState {
  conversationId: string | null;
  messages: ChatMessage[];
  /** Highest seq applied; frames at or below it are duplicates. */
  lastSeq: number;
  /** An answer streams (or a message was sent and its answer has not started). */
  streaming: boolean;
  /** An error not tied to an answer or a message. */
  error: { code: string; message: string } | null;
}

export const emptyChat = (conversationId: string | null = null): ChatState => ({
  conversationId,
  messages: [],
  lastSeq: 0,
  streaming: false,
  error: null,
});

let keyCounter = 0;
const nextKey = (p: string) => `${p}${++keyCounter}`;

export function addUserMessage(
  state: ChatState,
  content: string,
  attachments: Attachment[] = [],
  opts: { voice?: boolean; status?: SendStatus; replaces?: string } = {},
): ChatState {
  const parts: Part[] = [
    { kind: "text", text: content },
    ...attachments.map((a): Part => ({ kind: "attachment", id: a.id, filename: a.filename })),
  ];
  const status = opts.status ?? "sending";
  const message: ChatMessage = {
    key: nextKey("u"),
    role: "user",
    parts,
    complete: true,
    status,
    request: { content, voice: !!opts.voice, attachments, ...(opts.replaces ? { replaces: opts.replaces } : {}) },
  };
  return {
    ...state,
    error: null,
    streaming: state.streaming || status === "sending",
    messages: [...state.messages, message],
  };
}

/**
 * The message `key` (a stored user message) and everything after it give way to
 * a new user message sent in its place (edit and resend, regenerate).
 */
export function replaceFrom(
  state: ChatState,
  key: string,
  content: string,
  attachments: Attachment[] = [],
  opts: { voice?: boolean } = {},
): ChatState {
  const index = state.messages.findIndex((m) => m.key === key);
  const replaced = state.messages[index];
  if (!replaced?.id || replaced.role !== "user") return state;
  const kept = { ...state, messages: state.messages.slice(0, index) };
  return addUserMessage(kept, content, attachments, { voice: opts.voice, status: "sending", replaces: replaced.id });
}

/** What a user message asked (its text and attachments), to ask it again. */
export function requestOf(message: ChatMessage): SendRequest {
  return (
    message.request ?? {
      content: message.parts.map((p) => (p.kind === "text" ? p.text : "")).join(""),
      voice: false,
      attachments: message.parts.flatMap((p) => (p.kind === "attachment" ? [{ id: p.id, filename: p.filename }] : [])),
    }
  );
}

/** Changes one message (by key). */
export function updateMessage(state: ChatState, key: string, f: (m: ChatMessage) => ChatMessage | null): ChatState {
  const messages: ChatMessage[] = [];
  for (const m of state.messages) {
    if (m.key !== key) messages.push(m);
    else {
      const next = f(m);
      if (next) messages.push(next);
    }
  }
  return { ...state, messages };
}

/** The oldest user message waiting for its turn to start. */
export function sendingMessage(state: ChatState): ChatMessage | undefined {
  return state.messages.find((m) => m.role === "user" && m.status === "sending");
}

/** The answer being streamed: the last message if it is an unfinished assistant one. */
function withAnswer(state: ChatState, f: (m: ChatMessage) => ChatMessage): ChatState {
  const msgs = state.messages.slice();
  const last = msgs[msgs.length - 1];
  if (last && last.role === "assistant" && !last.complete) {
    msgs[msgs.length - 1] = f(last);
  } else {
    msgs.push(f({ key: nextKey("a"), role: "assistant", parts: [], complete: false }));
  }
  return { ...state, messages: msgs };
}

function appendText(m: ChatMessage, delta: string): ChatMessage {
  const parts = m.parts.slice();
  const last = parts[parts.length - 1];
  if (last && last.kind === "text") parts[parts.length - 1] = { kind: "text", text: last.text + delta };
  else parts.push({ kind: "text", text: delta });
  return { ...m, parts };
}

function setToolResult(m: ChatMessage, id: string, content: unknown, isError: boolean): ChatMessage {
  const idx = m.parts.findIndex((p) => p.kind === "tool" && p.id === id);
  const parts = m.parts.slice();
  if (idx >= 0) {
    const p = parts[idx] as Extract<Part, { kind: "tool" }>;
    parts[idx] = { ...p, result: { content, isError } };
  } else {
    parts.push({ kind: "tool", id, name: "tool", input: undefined, result: { content, isError } });
  }
  return { ...m, parts };
}

const isEmptyAnswer = (m: ChatMessage) =>
  !m.voice?.length && m.parts.every((p) => p.kind === "text" && p.text.trim() === "");

/**
 * A message to this conversation was refused before its turn started (or, with
 * an answer streaming, its sandbox went): the sending message is marked failed
 * (it can be sent again), or the answer ends with the error.
 */
export function refuse(state: ChatState, error: { code: string; message: string }): ChatState {
  const last = state.messages[state.messages.length - 1];
  if (last && last.role === "assistant" && !last.complete) {
    const s = withAnswer(state, (m) => ({ ...m, complete: true, error }));
    return { ...s, streaming: false };
  }
  const sending = sendingMessage(state);
  if (sending) {
    const s = updateMessage(state, sending.key, (m) => ({ ...m, status: "failed", error }));
    return { ...s, streaming: !!sendingMessage(s) };
  }
  return { ...state, streaming: false, error };
}

/** Applies one frame of this conversation. Numbered frames not above `lastSeq` change nothing. */
export function applyFrame(state: ChatState, frame: ServerFrame): ChatState {
  if (frame.type === "status") return state;
  if (!isNumbered(frame)) {
    if (frame.type === "error") return refuse(state, { code: frame.code, message: frame.message });
    return state;
  }
  if (frame.seq <= state.lastSeq) return state;
  state = { ...state, lastSeq: frame.seq };
  switch (frame.type) {
    case "turn": {
      // The oldest message waiting is the one this turn answers.
      const sending = sendingMessage(state);
      const id = frame.prompt_id;
      if (sending)
        state = updateMessage(state, sending.key, (m) => ({ ...m, status: undefined, error: undefined, ...(id ? { id } : {}) }));
      return { ...withAnswer(state, (m) => m), streaming: true, error: null };
    }
    case "text":
      return withAnswer(state, (m) => appendText(m, frame.delta));
    case "tool_use":
      return withAnswer(state, (m) => ({
        ...m,
        parts: [...m.parts, { kind: "tool", id: frame.id, name: frame.name, input: frame.input }],
      }));
    case "tool_result":
      return withAnswer(state, (m) => setToolResult(m, frame.id, frame.content, !!frame.is_error));
    case "document":
      return withAnswer(state, (m) => ({
        ...m,
        parts: [...m.parts, { kind: "document", id: frame.id, filename: frame.filename }],
      }));
    case "voice":
      return withAnswer(state, (m) => ({
        ...m,
        voice: [...(m.voice ?? []), { url: frame.url, transcript: frame.transcript, error: frame.error }],
      }));
    case "done": {
      const s = withAnswer(state, (m) => ({
        ...m,
        complete: true,
        usage: frame.usage,
        stopped: frame.stopped || isEmptyAnswer(m) || undefined,
      }));
      return { ...s, streaming: !!sendingMessage(s) };
    }
    case "error": {
      const error = { code: frame.code, message: frame.message };
      const s = withAnswer(state, (m) => ({ ...m, complete: true, error }));
      return { ...s, streaming: !!sendingMessage(s) };
    }
  }
  return state;
}

/** Code points, as the router counts an event's `at`. */
const codePoints = (s: string) => Array.from(s);

/** Rebuilds the chat from a stored conversation (`GET /api/conversations/{id}`). */
export function fromHistory(conv: Conversation): ChatState {
  const state = emptyChat(conv.id);
  state.lastSeq = conv.last_seq ?? 0;
  conv.messages.forEach((h, index) => {
    const role = h.role === "user" ? "user" : "assistant";
    let m: ChatMessage = { key: h.id, id: h.id, role, parts: [], complete: true };
    const events = Array.isArray(h.events) ? (h.events as Record<string, unknown>[]) : [];
    // Text and events interleaved as they streamed: each stored event says how
    // much of the text came before it (`at`); older ones, without, come first.
    const text = codePoints(h.content ?? "");
    let shown = 0;
    const textUpTo = (at: number) => {
      const end = Math.max(shown, Math.min(at, text.length));
      if (end > shown) m = appendText(m, text.slice(shown, end).join(""));
      shown = end;
    };
    for (const e of events) {
      if (!e || typeof e !== "object") continue;
      if (typeof e.at === "number") textUpTo(e.at);
      if (e.type === "tool_use")
        m.parts.push({ kind: "tool", id: String(e.id), name: String(e.name ?? "tool"), input: e.input });
      else if (e.type === "tool_result") m = setToolResult(m, String(e.id), e.content, !!e.is_error);
      else if (e.type === "document")
        m.parts.push({ kind: "document", id: String(e.id), filename: String(e.filename ?? "document") });
      else if (e.type === "attachment")
        m.parts.push({ kind: "attachment", id: String(e.id), filename: String(e.filename ?? "file") });
      else if (e.type === "voice" && typeof e.url === "string") {
        const error = e.error && typeof e.error === "object" ? (e.error as VoiceClip["error"]) : undefined;
        const transcript = typeof e.transcript === "string" ? e.transcript : undefined;
        m.voice = [...(m.voice ?? []), { url: e.url, transcript, error }];
      } else if (e.type === "error")
        m.error = { code: String(e.code ?? "error"), message: String(e.message ?? "") };
      else if (e.type === "stopped") m.stopped = true;
    }
    textUpTo(text.length);
    // The user's own text comes first, then what it attached.
    if (role === "user") m.parts.sort((a, b) => (a.kind === "text" ? 0 : 1) - (b.kind === "text" ? 0 : 1));
    const last = index === conv.messages.length - 1;
    if (!h.complete && role === "assistant") {
      if (last && conv.running) {
        m.complete = false;
        state.streaming = true;
      } else if (!m.error) m.error = { code: "incomplete", message: "This answer was cut off." };
    } else if (role === "assistant" && h.complete && isEmptyAnswer(m)) m.stopped = true;
    state.messages.push(m);
  });
  return state;
}

/** A readable one-line summary of a tool call's input (the command, path or pattern). */
export function toolSummary(name: string, input: unknown): string {
  if (input && typeof input === "object") {
    const o = input as Record<string, unknown>;
    for (const k of ["command", "file_path", "path", "pattern", "filename", "query", "url", "text"]) {
      if (typeof o[k] === "string") return String(o[k]).split("\n")[0].slice(0, 120);
    }
  }
  if (typeof input === "string") return input.slice(0, 120);
  return name;
}

/** Tool results come as a string or as content blocks; make them text. */
export function resultText(content: unknown): string {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content
      .map((b) =>
        b && typeof b === "object" && typeof (b as { text?: unknown }).text === "string"
          ? (b as { text: string }).text
          : JSON.stringify(b),
      )
      .join("\n");
  }
  return content === undefined ? "" : JSON.stringify(content, null, 2);
}
