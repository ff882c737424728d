// Shapes of the router's HTTP API and WebSocket frames (DESIGN.md, "Interfaces").

export interface User {
  id: string;
  email: string;
  tier: string;
  subscription_active: boolean;
  /** `GET /api/me` only: answers are spoken unless a message says otherwise. */
  voice_answers?: boolean;
  /** `GET /api/me` only: the plan and server can speak answers. */
  voice_available?: boolean;
}

export interface Session {
  access_token: string;
  refresh_token: string;
  token_type?: string;
  expires_in?: number;
  user: User;
}

export interface ConversationSummary {
  id: string;
  title: string;
  created_at: string;
  updated_at: string;
}

export interface HistoryMessage {
  id: string;
  role: string;
  content: string;
  events: unknown;
  complete: boolean;
  created_at: string;
}

export interface Conversation extends ConversationSummary {
  messages: HistoryMessage[];
  /** The highest event `seq` the messages hold: resume after it for the rest. */
  last_seq?: number;
  /** The last answer's turn still runs (it goes on after `last_seq`). */
  running?: boolean;
}

export type DocType = "text" | "markdown" | "code";

export interface DocumentSummary {
  id: string;
  filename: string;
  type: DocType;
  size: number;
  conversation_id: string | null;
  created_at: string;
  updated_at: string;
}

export interface Doc extends DocumentSummary {
  content: string;
}

export interface FileView {
  id: string;
  filename: string;
  path: string;
  size: number;
  content_type: string;
  kind: string;
  created_at: string;
  updated_at: string;
}

/** One file of a `POST /api/files` answer. */
export interface UploadedFile {
  id: string;
  filename: string;
  path: string;
  size: number;
  content_type: string;
  kind: "upload";
}

// --- WebSocket frames -------------------------------------------------------

export type ClientFrame =
  | {
      type: "message";
      content: string;
      conversation_id?: string;
      voice?: boolean;
      attachments?: string[];
      /** The id of a user message of this conversation: this message takes its
       * place and that of everything after it (edit and resend, regenerate). */
      replaces?: string;
    }
  | { type: "interrupt"; conversation_id?: string }
  | { type: "resume"; conversation_id: string; after_seq: number }
  /** The user's answer to an `egress_request`. */
  | { type: "egress_decision"; id: string; decision: EgressAnswer };

/** Allow this connection only, allow the host from now on, or refuse it. */
export type EgressAnswer = "once" | "always" | "deny";

// Every numbered frame names its conversation: the router relays the events of
// all the user's conversations to each of their connections.
export type ServerFrame =
  | { type: "status"; state: "waking" | "ready" }
  /** `prompt_id`: the id of the user message that started the turn. */
  | { type: "turn"; seq: number; conversation_id: string; prompt_id?: string }
  | { type: "text"; seq: number; conversation_id?: string; delta: string }
  | { type: "tool_use"; seq: number; conversation_id?: string; id: string; name: string; input: unknown }
  | { type: "tool_result"; seq: number; conversation_id?: string; id: string; is_error: boolean; content: unknown }
  | { type: "document"; seq: number; conversation_id?: string; id: string; filename: string }
  | {
      type: "voice";
      seq: number;
      conversation_id?: string;
      url: string;
      transcript?: string;
      /** This part could not be spoken (the text answer goes on). */
      error?: { code: string; message: string };
    }
  | {
      type: "done";
      seq: number;
      conversation_id: string;
      usage?: { input_tokens: number; output_tokens: number };
      /** The user stopped the turn. */
      stopped?: boolean;
    }
  /** With `seq`, it ended that conversation's turn; with `conversation_id` only,
   * a message to it was refused (or its sandbox went); with neither, it is about
   * a frame of this connection. */
  | { type: "error"; code: string; message: string; conversation_id?: string; seq?: number }
  /** The agent's sandbox asks to reach a host outside the allow-list; its
   * connection waits (at most `expires_in_ms`) for an `egress_decision`. */
  | { type: "egress_request"; id: string; host: string; port: number; expires_in_ms: number }
  /** A question ended (answered in some tab, expired, or no tab was open). */
  | { type: "egress_resolved"; id: string; decision: EgressAnswer | "expired" | "unseen" };

export type ErrorFrame = Extract<ServerFrame, { type: "error" }>;

/** An event of a turn: numbered within its conversation. */
export type SeqFrame = Exclude<Extract<ServerFrame, { seq: number }>, ErrorFrame> | (ErrorFrame & { seq: number });

/** A numbered event of a turn (of one conversation's state). */
export function isNumbered(frame: ServerFrame): frame is SeqFrame {
  return typeof (frame as { seq?: unknown }).seq === "number";
}

/** A numbered event and the conversation it belongs to (the router sends both). */
export function hasSeq(frame: ServerFrame): frame is SeqFrame & { conversation_id: string } {
  return isNumbered(frame) && typeof (frame as { conversation_id?: unknown }).conversation_id === "string";
}

/** The error code the router answers a message with when the plan's concurrent
 * answers are all running (`sandbox::protocol::error_code::TOO_MANY_TURNS`). */
export const TOO_MANY_TURNS = "too_many_turns";
/** A resume asked for events no longer kept live (they are in the stored history). */
export const RESUME_INCOMPLETE = "resume_incomplete";
/** A message that was to replace a user message was refused (that message is not
 * current, or a turn runs); `CANNOT_REWIND`: the conversation predates editing. */
export const CANNOT_REPLACE = "cannot_replace";
export const CANNOT_REWIND = "cannot_rewind";

/** Parses one text frame; null for anything that is not a known frame. */
export function parseFrame(data: unknown): ServerFrame | null {
  if (typeof data !== "string") return null;
  let v: unknown;
  try {
    v = JSON.parse(data);
  } catch {
    return null;
  }
  if (!v || typeof v !== "object") return null;
  const t = (v as { type?: unknown }).type;
  const known = [
    "status",
    "turn",
    "text",
    "tool_use",
    "tool_result",
    "document",
    "voice",
    "done",
    "error",
    "egress_request",
    "egress_resolved",
  ];
  return typeof t === "string" && known.includes(t) ? (v as ServerFrame) : null;
}
