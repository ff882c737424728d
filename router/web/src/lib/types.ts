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
    }
  | { type: "interrupt" }
  | { type: "resume"; conversation_id: string; after_seq: number };

export type ServerFrame =
  | { type: "status"; state: "waking" | "ready" }
  | { type: "turn"; seq: number; conversation_id: string }
  | { type: "text"; seq: number; delta: string }
  | { type: "tool_use"; seq: number; id: string; name: string; input: unknown }
  | { type: "tool_result"; seq: number; id: string; is_error: boolean; content: unknown }
  | { type: "document"; seq: number; id: string; filename: string }
  | {
      type: "voice";
      seq: number;
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
    }
  | { type: "error"; code: string; message: string };

export type SeqFrame = Extract<ServerFrame, { seq: number }>;

export function hasSeq(frame: ServerFrame): frame is SeqFrame {
  return typeof (frame as { seq?: unknown }).seq === "number";
}

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
  const known = ["status", "turn", "text", "tool_use", "tool_result", "document", "voice", "done", "error"];
  return typeof t === "string" && known.includes(t) ? (v as ServerFrame) : null;
}
