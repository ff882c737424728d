// The chat stream as plain data: frames from the router fold into a list of
// messages. Pure functions only, so it is easy to test and to replay.

import { hasSeq, type Conversation, type ServerFrame } from "./types";
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

export interface ChatMessage {
  key: string;
  role: "user" | "assistant";
  parts: Part[];
  /** The answer's spoken sentences, in order (and any voice error). */
  voice?: VoiceClip[];
  complete: boolean;
  usage?: { input_tokens: number; output_tokens: number };
  error?: { code: string; message: string };
}

export interface ChatState {
  conversationId: string | null;
  messages: ChatMessage[];
  /** Highest seq applied; frames at or below it are duplicates. */
  lastSeq: number;
  streaming: boolean;
  workspace: "waking" | "ready" | null;
  /** An error not tied to an answer (e.g. refused before the turn started). */
  error: { code: string; message: string } | null;
}

export const emptyChat = (conversationId: string | null = null): ChatState => ({
  conversationId,
  messages: [],
  lastSeq: 0,
  streaming: false,
  workspace: null,
  error: null,
});

let keyCounter = 0;
const nextKey = (p: string) => `${p}${++keyCounter}`;

export function addUserMessage(state: ChatState, content: string, attachments: Attachment[] = []): ChatState {
  const parts: Part[] = [
    { kind: "text", text: content },
    ...attachments.map((a): Part => ({ kind: "attachment", id: a.id, filename: a.filename })),
  ];
  return {
    ...state,
    error: null,
    streaming: true,
    messages: [...state.messages, { key: nextKey("u"), role: "user", parts, complete: true }],
  };
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

/** Applies one frame. Frames whose seq is not above `lastSeq` are ignored (returns `state`). */
export function applyFrame(state: ChatState, frame: ServerFrame): ChatState {
  if (frame.type === "status") return { ...state, workspace: frame.state };
  if (frame.type === "error") {
    const error = { code: frame.code, message: frame.message };
    const last = state.messages[state.messages.length - 1];
    if (last && last.role === "assistant" && !last.complete) {
      const s = withAnswer(state, (m) => ({ ...m, complete: true, error }));
      return { ...s, streaming: false };
    }
    return { ...state, streaming: false, error };
  }
  if (!hasSeq(frame)) return state;
  if (frame.type === "turn" && frame.conversation_id !== state.conversationId) {
    // A turn of another (e.g. just created) conversation: its numbering is its own.
    state = { ...state, conversationId: frame.conversation_id, lastSeq: 0 };
  }
  if (frame.seq <= state.lastSeq) return state;
  state = { ...state, lastSeq: frame.seq };
  switch (frame.type) {
    case "turn":
      return { ...withAnswer(state, (m) => m), streaming: true, error: null };
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
      const s = withAnswer(state, (m) => ({ ...m, complete: true, usage: frame.usage }));
      return { ...s, streaming: false, conversationId: frame.conversation_id ?? s.conversationId };
    }
  }
  return state;
}

/** Rebuilds the chat from a stored conversation (`GET /api/conversations/{id}`). */
export function fromHistory(conv: Conversation): ChatState {
  const state = emptyChat(conv.id);
  for (const h of conv.messages) {
    const role = h.role === "user" ? "user" : "assistant";
    let m: ChatMessage = { key: h.id, role, parts: [], complete: true };
    if (h.content) m.parts.push({ kind: "text", text: h.content });
    const events = Array.isArray(h.events) ? (h.events as Record<string, unknown>[]) : [];
    for (const e of events) {
      if (!e || typeof e !== "object") continue;
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
      }
    }
    if (!h.complete && role === "assistant") m.error = { code: "incomplete", message: "This answer was cut off." };
    state.messages.push(m);
  }
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
