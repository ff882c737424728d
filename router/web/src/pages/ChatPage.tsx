import { useCallback, useEffect, useId, useRef, useState } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { PendingAttachments, useUploads } from "../components/Attachments";
import { ChatErrorView, MessageView, PaperclipIcon } from "../components/MessageView";
import { Button, ErrorBox, errorText, inputClass } from "../components/ui";
import { useChat, useServices } from "../context";
import type { ConversationSummary, User } from "../lib/types";

function ConnectionBadge() {
  const { connection, chat } = useChat();
  let text = "Connecting…";
  let color = "bg-amber-500";
  if (connection === "open") {
    if (chat.workspace === "waking") text = "Workspace waking up…";
    else {
      text = chat.workspace === "ready" ? "Workspace ready" : "Connected";
      color = "bg-emerald-500";
    }
  } else if (connection === "reconnecting") text = "Reconnecting…";
  else if (connection === "closed") {
    text = "Offline";
    color = "bg-slate-400";
  }
  return (
    <span role="status" aria-live="polite" className="inline-flex items-center gap-1.5 text-xs text-slate-600 dark:text-slate-400" data-testid="connection-status">
      <span aria-hidden className={`h-2 w-2 rounded-full ${color} ${chat.workspace === "waking" ? "animate-pulse" : ""}`} />
      {text}
    </span>
  );
}

function ConversationItem({
  c,
  active,
  onRename,
  onDelete,
}: {
  c: ConversationSummary;
  active: boolean;
  onRename: (title: string) => Promise<void>;
  onDelete: () => Promise<void>;
}) {
  const [editing, setEditing] = useState(false);
  const [title, setTitle] = useState(c.title);
  const inputId = useId();
  if (editing) {
    return (
      <li>
        <form
          className="flex gap-1 p-1"
          onSubmit={async (e) => {
            e.preventDefault();
            await onRename(title);
            setEditing(false);
          }}
        >
          <label htmlFor={inputId} className="sr-only">New title</label>
          <input id={inputId} autoFocus className={`${inputClass} py-1`} value={title} onChange={(e) => setTitle(e.target.value)} onKeyDown={(e) => e.key === "Escape" && setEditing(false)} />
          <Button type="submit" variant="primary">Save</Button>
        </form>
      </li>
    );
  }
  return (
    <li className={`group flex items-center rounded-md ${active ? "bg-slate-200 dark:bg-slate-800" : "hover:bg-slate-100 dark:hover:bg-slate-900"}`}>
      <Link to={`/chat/${c.id}`} aria-current={active ? "page" : undefined} className="min-w-0 flex-1 truncate px-2 py-1.5 text-sm">
        {c.title || "Untitled"}
      </Link>
      <button type="button" className="rounded px-1.5 text-xs text-slate-500 hover:text-slate-900 dark:hover:text-white" aria-label={`Rename ${c.title}`} onClick={() => { setTitle(c.title); setEditing(true); }}>
        ✎
      </button>
      <button
        type="button"
        className="rounded px-1.5 text-xs text-slate-500 hover:text-red-600"
        aria-label={`Delete ${c.title}`}
        onClick={() => {
          if (window.confirm(`Delete “${c.title}”? This cannot be undone.`)) void onDelete();
        }}
      >
        ✕
      </button>
    </li>
  );
}

export function ChatPage() {
  const { id } = useParams();
  const { api, chat: store } = useServices();
  const snap = useChat();
  const { chat } = snap;
  const navigate = useNavigate();
  const [convs, setConvs] = useState<ConversationSummary[] | null>(null);
  const [listError, setListError] = useState<string | null>(null);
  const [draft, setDraft] = useState("");
  const [showList, setShowList] = useState(false);
  // Speak the next answer: starts from the saved setting, changed per message here.
  const [voice, setVoice] = useState(false);
  const [voiceAvailable, setVoiceAvailable] = useState(true);
  const bottom = useRef<HTMLDivElement>(null);
  const inputId = useId();
  const attach = useUploads(api);
  const fileInput = useRef<HTMLInputElement>(null);
  const [dragging, setDragging] = useState(false);

  const loadList = useCallback(async () => {
    try {
      const r = await api.get<{ conversations: ConversationSummary[] }>("/api/conversations?limit=100");
      setConvs(r.conversations);
      setListError(null);
    } catch (e) {
      setListError(errorText(e));
    }
  }, [api]);

  useEffect(() => {
    void loadList();
  }, [loadList]);

  useEffect(() => {
    api
      .get<User>("/api/me")
      .then((me) => {
        setVoice(!!me.voice_answers);
        setVoiceAvailable(me.voice_available !== false);
      })
      .catch(() => {});
  }, [api]);

  useEffect(() => {
    void store.open(id ?? null);
  }, [id, store]);

  // A new conversation got its id from the first `turn`: show it in the URL and the list.
  useEffect(
    () =>
      store.onFrame((f) => {
        if (f.type === "turn" && !id) navigate(`/chat/${f.conversation_id}`, { replace: true });
        if (f.type === "done" || f.type === "turn") void loadList();
      }),
    [store, id, navigate, loadList],
  );

  useEffect(() => {
    bottom.current?.scrollIntoView?.({ block: "end" });
  }, [chat.messages]);

  const canSend = (draft.trim() !== "" || attach.ready.length > 0) && !attach.busy;

  function send(e?: React.FormEvent) {
    e?.preventDefault();
    const files = attach.ready;
    const text = draft.trim() || (files.length > 0 ? `Please look at the attached file${files.length > 1 ? "s" : ""}.` : "");
    if (!text || chat.streaming || attach.busy) return;
    store.send(text, voice, files);
    setDraft("");
    attach.clear();
  }

  const hasFiles = (e: React.DragEvent) => Array.from(e.dataTransfer?.types ?? []).includes("Files");

  return (
    <div className="flex h-full min-h-0">
      <aside
        className={`${showList ? "fixed inset-x-0 bottom-0 top-14 z-20 block bg-white dark:bg-slate-950" : "hidden"} w-full shrink-0 border-r border-slate-200 p-2 md:static md:block md:w-64 dark:border-slate-800`}
        aria-label="Conversations"
      >
        <Button variant="primary" className="mb-2 w-full" onClick={() => { setShowList(false); navigate("/chat"); }}>
          + New conversation
        </Button>
        {listError ? <ErrorBox>{listError}</ErrorBox> : null}
        {convs && convs.length === 0 ? <p className="p-2 text-sm text-slate-500">No conversations yet.</p> : null}
        <ul className="space-y-0.5" onClick={() => setShowList(false)}>
          {convs?.map((c) => (
            <ConversationItem
              key={c.id}
              c={c}
              active={c.id === id}
              onRename={async (title) => {
                try {
                  await api.json("PUT", `/api/conversations/${c.id}`, { title });
                  await loadList();
                } catch (e) {
                  setListError(errorText(e));
                }
              }}
              onDelete={async () => {
                try {
                  await api.json("DELETE", `/api/conversations/${c.id}`);
                  if (c.id === id) navigate("/chat");
                  await loadList();
                } catch (e) {
                  setListError(errorText(e));
                }
              }}
            />
          ))}
        </ul>
      </aside>
      <section
        className="relative flex min-w-0 flex-1 flex-col"
        aria-label="Chat"
        data-testid="chat-drop-zone"
        onDragOver={(e) => {
          if (!hasFiles(e)) return;
          e.preventDefault();
          setDragging(true);
        }}
        onDragLeave={(e) => {
          if (!e.currentTarget.contains(e.relatedTarget as Node | null)) setDragging(false);
        }}
        onDrop={(e) => {
          if (!hasFiles(e)) return;
          e.preventDefault();
          setDragging(false);
          void attach.add(e.dataTransfer.files);
        }}
      >
        {dragging ? (
          <div className="pointer-events-none absolute inset-0 z-10 flex items-center justify-center border-2 border-dashed border-blue-500 bg-blue-50/80 text-blue-800 dark:bg-blue-950/80 dark:text-blue-200">
            Drop files to attach them
          </div>
        ) : null}
        <div className="flex items-center gap-2 border-b border-slate-200 px-3 py-2 dark:border-slate-800">
          <Button variant="ghost" className="md:hidden" aria-expanded={showList} onClick={() => setShowList(!showList)}>
            ☰ <span className="sr-only">Conversations</span>
          </Button>
          <h1 className="min-w-0 flex-1 truncate text-sm font-medium">
            {convs?.find((c) => c.id === id)?.title ?? (id ? "Conversation" : "New conversation")}
          </h1>
          <ConnectionBadge />
        </div>
        <div className="min-h-0 flex-1 overflow-y-auto px-3 py-4" aria-live="polite" aria-busy={chat.streaming}>
          <div className="mx-auto max-w-3xl space-y-4">
            {snap.loading ? <p className="text-sm text-slate-500">Loading…</p> : null}
            {snap.loadError ? <ErrorBox>{snap.loadError}</ErrorBox> : null}
            {!snap.loading && chat.messages.length === 0 ? (
              <div className="py-16 text-center text-slate-500" data-testid="empty-chat">
                <p className="text-lg font-medium text-slate-700 dark:text-slate-300">How can I help?</p>
                <p className="text-sm">Ask Jarvis to write, research or run code in your workspace.</p>
              </div>
            ) : null}
            {chat.messages.map((m, i) => (
              <MessageView key={m.key} message={m} live={chat.streaming && i === chat.messages.length - 1} />
            ))}
            {chat.error ? <ChatErrorView code={chat.error.code} message={chat.error.message} /> : null}
            <div ref={bottom} />
          </div>
        </div>
        <form onSubmit={send} className="border-t border-slate-200 p-3 dark:border-slate-800">
          <PendingAttachments uploads={attach.uploads} onRemove={attach.remove} />
          <div className="mx-auto flex max-w-3xl items-end gap-2">
            <input
              ref={fileInput}
              type="file"
              multiple
              hidden
              data-testid="file-input"
              onChange={(e) => {
                void attach.add(e.target.files);
                e.target.value = "";
              }}
            />
            <Button variant="ghost" aria-label="Attach files" title="Attach files" onClick={() => fileInput.current?.click()}>
              <PaperclipIcon />
            </Button>
            <label htmlFor={inputId} className="sr-only">Message</label>
            <textarea
              id={inputId}
              rows={2}
              className={`${inputClass} max-h-48 resize-none`}
              placeholder="Message Jarvis… (Enter to send, Shift+Enter for a new line)"
              value={draft}
              onChange={(e) => setDraft(e.target.value)}
              onKeyDown={(e) => {
                if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) {
                  e.preventDefault();
                  send();
                }
              }}
              data-testid="chat-input"
            />
            {voiceAvailable ? (
              <Button
                variant="ghost"
                aria-pressed={voice}
                title={voice ? "Answers are spoken (click for text only)" : "Click to hear the answer spoken"}
                onClick={() => setVoice(!voice)}
                data-testid="voice-toggle"
              >
                <svg aria-hidden viewBox="0 0 16 16" className="h-4 w-4 fill-none stroke-current" strokeWidth="1.3" strokeLinejoin="round">
                  <path d="M2 6h3l4-3v10l-4-3H2z" className={voice ? "fill-current" : ""} />
                  {voice ? <path d="M11 5.5c1 1.3 1 3.7 0 5M13 3.5c2 2.5 2 6.5 0 9" strokeLinecap="round" /> : <path d="M11.5 6l3 4m0-4l-3 4" strokeLinecap="round" />}
                </svg>
                <span className="sr-only">Speak the answer</span>
              </Button>
            ) : null}
            {chat.streaming ? (
              <Button variant="danger" onClick={() => store.stop()}>
                Stop
              </Button>
            ) : (
              <Button type="submit" variant="primary" disabled={!canSend}>
                Send
              </Button>
            )}
          </div>
        </form>
      </section>
    </div>
  );
}
