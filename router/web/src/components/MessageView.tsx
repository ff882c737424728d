import { useId, useRef, useState } from "react";
import { Link } from "react-router";
import { chatErrorText } from "../lib/messages";
import { useOpenInPane } from "../lib/pane";
import type { ChatMessage } from "../lib/stream";
import { LazyMarkdown } from "./LazyMarkdown";
import { CopyButton } from "./CopyButton";
import { ToolActivity } from "./ToolActivity";
import { Button, inputClass } from "./ui";
import { VoicePlayer } from "./VoicePlayer";

export function ChatErrorView({ code, message }: { code: string; message: string }) {
  const t = chatErrorText(code, message);
  const toAccount = code.includes("quota") || code.includes("subscription") || code === "payment_required";
  return (
    <div role="alert" className="mt-2 rounded-md border border-red-300 bg-red-50 px-3 py-2 text-sm text-red-800 dark:border-red-800 dark:bg-red-950 dark:text-red-200">
      <strong>{t.title}</strong> {t.action}{" "}
      {toAccount ? (
        <Link to="/account" className="underline">
          Open Account
        </Link>
      ) : null}
    </div>
  );
}

/** A paperclip and a file name: an upload a message names. */
export function AttachmentChip({ filename, children }: { filename: string; children?: React.ReactNode }) {
  return (
    <span
      className="my-1 mr-1 inline-flex max-w-full items-center gap-1 rounded-md bg-black/10 px-2 py-0.5 text-sm dark:bg-white/10"
      data-testid="attachment"
      title={filename}
    >
      <PaperclipIcon />
      <span className="truncate">{filename}</span>
      {children}
    </span>
  );
}

export function PaperclipIcon() {
  return (
    <svg aria-hidden viewBox="0 0 16 16" className="h-3.5 w-3.5 shrink-0 fill-none stroke-current">
      <path d="M10.5 4.5 5.4 9.6a1.5 1.5 0 0 0 2.1 2.1l5.3-5.3a3 3 0 0 0-4.2-4.2L3.3 7.5a4.5 4.5 0 0 0 6.4 6.4l4-4" strokeWidth="1.3" strokeLinecap="round" />
    </svg>
  );
}

/** An answer's text (its Markdown, as written), for the copy button. */
export function answerText(message: ChatMessage): string {
  return message.parts
    .flatMap((p) => (p.kind === "text" ? [p.text.trim()] : []))
    .filter(Boolean)
    .join("\n\n");
}

/** What the user can do with a message of theirs that did not go (yet). */
export interface SendActions {
  retry: (key: string) => void;
  edit: (key: string) => void;
  cancel: (key: string) => void;
  stopOthers: () => void;
}

/** Edit and resend a stored user message; regenerate the last answer. */
export interface RewriteActions {
  /** A turn of the conversation runs (or a message waits): both are disabled. */
  disabled: boolean;
  resend: (key: string, text: string) => void;
  regenerate: (key: string) => void;
}

/** A small action under or inside a message (44 px touch target on phones). */
const messageAction =
  "inline-flex items-center gap-1 rounded px-1.5 py-0.5 text-xs text-slate-600 hover:bg-slate-200 focus-visible:outline-2 disabled:cursor-not-allowed disabled:opacity-50 max-sm:min-h-11 max-sm:min-w-11 max-sm:justify-center dark:text-slate-300 dark:hover:bg-slate-700";

function StoppedNote() {
  return (
    <p className="px-1 text-sm italic text-slate-500 dark:text-slate-400" data-testid="stopped-note">
      Stopped
    </p>
  );
}

/** Icon only, like Copy (the name is its aria-label): the answer's text stays its own. */
function RegenerateButton({ rewrite, messageKey }: { rewrite: RewriteActions; messageKey: string }) {
  return (
    <button
      type="button"
      className={messageAction}
      aria-label="Regenerate answer"
      title={rewrite.disabled ? "Wait for the answer to end" : "Regenerate answer"}
      disabled={rewrite.disabled}
      onClick={() => rewrite.regenerate(messageKey)}
    >
      <svg aria-hidden viewBox="0 0 16 16" className="h-3.5 w-3.5 fill-none stroke-current" strokeWidth="1.4" strokeLinecap="round" strokeLinejoin="round">
        <path d="M13 8a5 5 0 1 1-1.5-3.6M13 2.5v3h-3" />
      </svg>
    </button>
  );
}

/** A stored user message with Edit: it turns into a box with Send and Cancel;
 * the new text goes in its place, with the same attachments. */
function EditableUserMessage({ message, rewrite }: { message: ChatMessage; rewrite: RewriteActions }) {
  const [draft, setDraft] = useState<string | null>(null);
  const editButton = useRef<HTMLButtonElement>(null);
  const inputId = useId();
  const text = message.parts.map((p) => (p.kind === "text" ? p.text : "")).join("");
  const attachments = message.parts.filter((p) => p.kind === "attachment");
  const cancel = () => {
    setDraft(null);
    setTimeout(() => editButton.current?.focus(), 0);
  };
  const canSend = draft !== null && draft.trim() !== "" && !rewrite.disabled;
  const send = (e?: React.FormEvent) => {
    e?.preventDefault();
    if (!canSend || draft === null) return;
    rewrite.resend(message.key, draft);
    setDraft(null);
  };
  if (draft !== null) {
    return (
      <form className="ml-auto flex w-full max-w-[95%] flex-col items-end gap-2 sm:max-w-[80%]" aria-label="Edit message" onSubmit={send}>
        <label htmlFor={inputId} className="sr-only">
          Edit message
        </label>
        <textarea
          id={inputId}
          autoFocus
          rows={Math.min(8, Math.max(2, draft.split("\n").length))}
          className={`${inputClass} resize-y`}
          value={draft}
          onChange={(e) => setDraft(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === "Escape") {
              e.preventDefault();
              cancel();
            } else if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) {
              e.preventDefault();
              send();
            }
          }}
          data-testid="edit-input"
        />
        {attachments.length > 0 ? (
          <div className="flex flex-wrap justify-end" aria-label="Attachments sent again">
            {attachments.map((p) => (
              <AttachmentChip key={p.id} filename={p.filename} />
            ))}
          </div>
        ) : null}
        <div className="flex gap-2">
          <Button onClick={cancel}>Cancel</Button>
          <Button type="submit" variant="primary" disabled={!canSend}>
            Send
          </Button>
        </div>
      </form>
    );
  }
  return (
    <div className="flex flex-col items-end" data-testid="editable-message">
      <MessageBubble message={message} />
      <button
        ref={editButton}
        type="button"
        className={`${messageAction} mt-0.5`}
        aria-label="Edit message"
        title={rewrite.disabled ? "Wait for the answer to end" : "Edit and send again"}
        disabled={rewrite.disabled}
        onClick={() => setDraft(text)}
      >
        <svg aria-hidden viewBox="0 0 16 16" className="h-3.5 w-3.5 fill-none stroke-current" strokeWidth="1.3" strokeLinejoin="round">
          <path d="M11 2.5l2.5 2.5L6 12.5H3.5V10z" />
        </svg>
        <span aria-hidden className="max-sm:hidden">Edit</span>
      </button>
    </div>
  );
}

const linkButton = "rounded px-1.5 py-0.5 font-medium underline-offset-2 hover:underline focus-visible:outline-2 focus-visible:outline-blue-500";

/** Under a user message: waiting for another answer to end, or refused with Retry. */
function SendStatusView({ message, actions }: { message: ChatMessage; actions?: SendActions }) {
  if (message.status === "queued") {
    return (
      <div role="status" className="mt-1 flex flex-wrap items-center justify-end gap-x-2 text-xs text-slate-600 dark:text-slate-400" data-testid="queued-note">
        <span>
          <span aria-hidden className="mr-1 inline-block h-1.5 w-1.5 animate-pulse rounded-full bg-amber-500 align-middle" />
          Waiting: sends when the other answer ends
        </span>
        {actions ? (
          <>
            <button type="button" className={`${linkButton} text-blue-700 dark:text-blue-300`} onClick={() => actions.stopOthers()}>
              Stop it and send
            </button>
            <button type="button" className={linkButton} onClick={() => actions.cancel(message.key)}>
              Cancel
            </button>
          </>
        ) : null}
      </div>
    );
  }
  if (message.status === "failed" && message.error) {
    return (
      <div className="mt-1 flex flex-col items-end" data-testid="send-failed">
        <ChatErrorView code={message.error.code} message={message.error.message} />
        {actions ? (
          <div className="mt-1 flex gap-2 text-sm">
            <button type="button" className={`${linkButton} text-blue-700 dark:text-blue-300`} onClick={() => actions.retry(message.key)}>
              Retry
            </button>
            <button type="button" className={linkButton} onClick={() => actions.edit(message.key)}>
              Edit
            </button>
          </div>
        ) : null}
      </div>
    );
  }
  return null;
}

export function MessageView({
  message,
  live,
  actions,
  canRetry,
  rewrite,
  canRegenerate,
}: {
  message: ChatMessage;
  live?: boolean;
  actions?: SendActions;
  /** The answer ended with an error and may be asked again (the last one). */
  canRetry?: boolean;
  /** Edit (stored user messages) and regenerate (`canRegenerate`: the last answer). */
  rewrite?: RewriteActions;
  canRegenerate?: boolean;
}) {
  const user = message.role === "user";
  const regenerate = !user && canRegenerate && rewrite && message.complete && !message.error ? rewrite : undefined;
  if (!user && message.stopped && message.complete && isEmpty(message)) {
    // Stopped before its first word: a note, not an empty bubble.
    return (
      <article aria-label="Jarvis" data-testid="assistant-message" data-stopped="true" className="flex items-center justify-start gap-2">
        <StoppedNote />
        {regenerate ? <RegenerateButton rewrite={regenerate} messageKey={message.key} /> : null}
      </article>
    );
  }
  if (user && !message.status && message.id && rewrite) return <EditableUserMessage message={message} rewrite={rewrite} />;
  if (user && message.status) {
    return (
      <div className="flex flex-col items-end" data-testid="pending-message" data-status={message.status}>
        <MessageBubble message={message} />
        <SendStatusView message={message} actions={actions} />
      </div>
    );
  }
  if (!user && message.error && canRetry && actions) {
    return (
      <div className="flex flex-col items-start">
        <MessageBubble message={message} live={live} />
        <button
          type="button"
          className={`${linkButton} mt-1 text-sm text-blue-700 dark:text-blue-300`}
          onClick={() => actions.retry(message.key)}
        >
          Retry
        </button>
      </div>
    );
  }
  return <MessageBubble message={message} live={live} regenerate={regenerate} />;
}

/** Nothing was said (no text, no voice). */
const isEmpty = (m: ChatMessage) => !m.voice?.length && m.parts.every((p) => p.kind === "text" && p.text.trim() === "");

function MessageBubble({ message, live, regenerate }: { message: ChatMessage; live?: boolean; regenerate?: RewriteActions }) {
  const user = message.role === "user";
  // On the chat page documents and attachments open in the side pane.
  const openInPane = useOpenInPane();
  return (
    <article
      className={`flex ${user ? "justify-end" : "justify-start"}`}
      aria-label={user ? "You" : "Jarvis"}
      data-testid={user ? "user-message" : "assistant-message"}
      data-stopped={!user && message.stopped ? "true" : undefined}
    >
      <div
        className={`max-w-[95%] rounded-2xl px-4 py-2 sm:max-w-[80%] ${
          user ? "bg-blue-600 text-white" : "bg-slate-100 dark:bg-slate-900"
        } ${message.status === "queued" || message.status === "sending" ? "opacity-80" : ""}`}
      >
        {message.parts.map((p, i) =>
          p.kind === "text" ? (
            user ? (
              <div key={i} className="whitespace-pre-wrap">{p.text}</div>
            ) : (
              <LazyMarkdown key={i} text={p.text} />
            )
          ) : p.kind === "tool" ? (
            <ToolActivity key={p.id + i} part={p} />
          ) : p.kind === "attachment" ? (
            openInPane ? (
              <button
                key={p.id + i}
                type="button"
                className="max-w-full rounded-md text-left hover:underline"
                aria-label={`Open ${p.filename}`}
                onClick={() => openInPane({ kind: "file", id: p.id, filename: p.filename })}
              >
                <AttachmentChip filename={p.filename} />
              </button>
            ) : (
              <AttachmentChip key={p.id + i} filename={p.filename} />
            )
          ) : (
            <div key={p.id + i} className="my-1 text-sm">
              <svg aria-hidden viewBox="0 0 16 16" className="mr-1 inline h-3.5 w-3.5 fill-none stroke-current align-[-2px]">
                <path d="M4 1.5h5l3 3v10H4z M9 1.5v3h3" strokeWidth="1.2" strokeLinejoin="round" />
              </svg>
              Saved{" "}
              <Link
                className="font-medium underline"
                to={`/documents/${p.id}`}
                onClick={(e) => {
                  if (!openInPane || e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
                  e.preventDefault();
                  openInPane({ kind: "document", id: p.id, filename: p.filename });
                }}
              >
                {p.filename}
              </Link>
            </div>
          ),
        )}
        {!user && !message.complete && live ? (
          <span className="inline-block animate-pulse text-slate-400" aria-label="Jarvis is answering">
            ▍
          </span>
        ) : null}
        {!user && message.complete && message.stopped ? <StoppedNote /> : null}
        {!user && message.complete && (regenerate || message.parts.some((p) => p.kind === "text" && p.text.trim())) ? (
          <div className="-mb-1 mt-1 flex justify-end gap-1">
            {regenerate ? <RegenerateButton rewrite={regenerate} messageKey={message.key} /> : null}
            {message.parts.some((p) => p.kind === "text" && p.text.trim()) ? (
              <CopyButton label="Copy answer" compact text={() => answerText(message)} />
            ) : null}
          </div>
        ) : null}
        {message.voice?.length ? <VoicePlayer clips={message.voice} autoPlay={!!live} /> : null}
        {message.error && !message.status ? <ChatErrorView code={message.error.code} message={message.error.message} /> : null}
      </div>
    </article>
  );
}
