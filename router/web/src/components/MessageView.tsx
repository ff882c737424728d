import { Link } from "react-router";
import { chatErrorText } from "../lib/messages";
import { useOpenInPane } from "../lib/pane";
import type { ChatMessage } from "../lib/stream";
import { LazyMarkdown } from "./LazyMarkdown";
import { CopyButton } from "./CopyButton";
import { ToolActivity } from "./ToolActivity";
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
}: {
  message: ChatMessage;
  live?: boolean;
  actions?: SendActions;
  /** The answer ended with an error and may be asked again (the last one). */
  canRetry?: boolean;
}) {
  const user = message.role === "user";
  if (!user && message.stopped && message.complete) {
    // Stopped before its first word: a note, not an empty bubble.
    return (
      <article aria-label="Jarvis" data-testid="assistant-message" data-stopped="true" className="flex justify-start">
        <p className="px-1 text-sm italic text-slate-500 dark:text-slate-400" data-testid="stopped-note">
          Stopped
        </p>
      </article>
    );
  }
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
  return <MessageBubble message={message} live={live} />;
}

function MessageBubble({ message, live }: { message: ChatMessage; live?: boolean }) {
  const user = message.role === "user";
  // On the chat page documents and attachments open in the side pane.
  const openInPane = useOpenInPane();
  return (
    <article
      className={`flex ${user ? "justify-end" : "justify-start"}`}
      aria-label={user ? "You" : "Jarvis"}
      data-testid={user ? "user-message" : "assistant-message"}
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
        {!user && message.complete && message.parts.some((p) => p.kind === "text" && p.text.trim()) ? (
          <div className="-mb-1 mt-1 flex justify-end">
            <CopyButton label="Copy answer" compact text={() => answerText(message)} />
          </div>
        ) : null}
        {message.voice?.length ? <VoicePlayer clips={message.voice} autoPlay={!!live} /> : null}
        {message.error && !message.status ? <ChatErrorView code={message.error.code} message={message.error.message} /> : null}
      </div>
    </article>
  );
}
