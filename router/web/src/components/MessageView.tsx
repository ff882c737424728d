import { Link } from "react-router";
import { chatErrorText } from "../lib/messages";
import { useOpenInPane } from "../lib/pane";
import type { ChatMessage } from "../lib/stream";
import { LazyMarkdown } from "./LazyMarkdown";
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

export function MessageView({ message, live }: { message: ChatMessage; live?: boolean }) {
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
        }`}
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
        {message.voice?.length ? <VoicePlayer clips={message.voice} autoPlay={!!live} /> : null}
        {message.error ? <ChatErrorView code={message.error.code} message={message.error.message} /> : null}
      </div>
    </article>
  );
}
