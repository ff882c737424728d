import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { useNavigate, useParams } from "react-router";
import { useUploads } from "../components/Attachments";
import { Composer } from "../components/Composer";
import { EgressPrompt } from "../components/EgressPrompt";
import { EmptyChat } from "../components/EmptyChat";
import { ConversationList } from "../components/ConversationList";
import { ChatErrorView, MessageView, type RewriteActions } from "../components/MessageView";
import { SidePane, usePane, type Pane } from "../components/SidePane";
import { Button, ErrorBox, errorText } from "../components/ui";
import { UnsavedChangesGuard } from "../components/UnsavedChangesGuard";
import { useChat, useServices } from "../context";
import { useDocumentTitle } from "../lib/documentTitle";
import { PaneContext } from "../lib/pane";
import { titleFrom } from "../lib/titles";
import type { ConversationSummary } from "../lib/types";

function ConnectionBadge() {
  const { connection, workspace } = useChat();
  let text = "Connecting…";
  let color = "bg-amber-500";
  if (connection === "open") {
    if (workspace === "waking") text = "Workspace waking up…";
    else {
      text = workspace === "ready" ? "Workspace ready" : "Connected";
      color = "bg-emerald-500";
    }
  } else if (connection === "reconnecting") text = "Reconnecting…";
  else if (connection === "closed") {
    text = "Offline";
    color = "bg-slate-400";
  }
  return (
    <span role="status" aria-live="polite" className="inline-flex items-center gap-1.5 text-xs text-slate-600 dark:text-slate-400" data-testid="connection-status">
      <span aria-hidden className={`h-2 w-2 rounded-full ${color} ${workspace === "waking" ? "animate-pulse" : ""}`} />
      {text}
    </span>
  );
}

/** Unsaved edits in the side pane survive moves between conversations; leaving the chat asks. */
const leavingChat = (_from: string, to: string) => !to.startsWith("/chat");

/** The chat, and beside it the side pane that documents and attachments of its messages open in. */
export function ChatPage() {
  const pane = usePane();
  return (
    <PaneContext.Provider value={pane.open}>
      <UnsavedChangesGuard dirty={pane.dirty} leaving={leavingChat} />
      <ChatView pane={pane} />
    </PaneContext.Provider>
  );
}

function ChatView({ pane }: { pane: Pane }) {
  const { id } = useParams();
  const { api, chat: store } = useServices();
  const snap = useChat();
  const { chat } = snap;
  const navigate = useNavigate();
  const [convs, setConvs] = useState<ConversationSummary[] | null>(null);
  const [listError, setListError] = useState<string | null>(null);
  const [showList, setShowList] = useState(false);
  const bottom = useRef<HTMLDivElement>(null);
  const attach = useUploads(api);
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
    void store.open(id ?? null);
  }, [id, store]);

  // A new conversation started (its first `turn`): show it in the URL and the list.
  useEffect(
    () =>
      store.onFrame((f) => {
        if (f.type === "turn" && !id && f.conversation_id === store.currentId)
          navigate(`/chat/${f.conversation_id}`, { replace: true });
        if (f.type === "done" || f.type === "turn") void loadList();
      }),
    [store, id, navigate, loadList],
  );

  useEffect(() => {
    bottom.current?.scrollIntoView?.({ block: "end" });
  }, [chat.messages]);

  const sendActions = useMemo(
    () => ({
      retry: (key: string) => store.retry(key),
      edit: (key: string) => store.edit(key),
      cancel: (key: string) => store.cancelQueued(key),
      stopOthers: () => store.stopOthers(),
    }),
    [store],
  );
  // Edit and resend, regenerate: not while a turn of this conversation runs.
  const rewriteDisabled = !store.canRewrite();
  const rewrite = useMemo<RewriteActions>(
    () => ({
      disabled: rewriteDisabled,
      resend: (key, text) => store.editAndResend(key, text),
      regenerate: (key) => store.regenerate(key),
    }),
    [store, rewriteDisabled],
  );

  // The last answer can be regenerated when its question is stored (has an id).
  const lastQuestion = [...chat.messages].reverse().find((m) => m.role === "user");
  const regenerable = !!lastQuestion?.id && chat.messages[chat.messages.length - 1]?.role === "assistant";

  // The conversation's title, also in the browser tab.
  const firstText = chat.messages[0]?.role === "user" ? chat.messages[0].parts.find((p) => p.kind === "text") : undefined;
  const title = (id ? convs?.find((c) => c.id === id)?.title : undefined) ?? (firstText?.kind === "text" ? titleFrom(firstText.text) : undefined);
  useDocumentTitle(title);

  const hasFiles = (e: React.DragEvent) => Array.from(e.dataTransfer?.types ?? []).includes("Files");

  return (
    <div className="flex h-full min-h-0">
      <ConversationList
        convs={convs}
        error={listError}
        activeId={id}
        open={showList}
        onClose={() => setShowList(false)}
        onNew={() => navigate("/chat")}
        onRename={async (c, title) => {
          try {
            await api.json("PUT", `/api/conversations/${c.id}`, { title });
            await loadList();
          } catch (e) {
            setListError(errorText(e));
          }
        }}
        onDelete={async (c) => {
          try {
            await api.json("DELETE", `/api/conversations/${c.id}`);
            if (c.id === id) navigate("/chat");
            await loadList();
          } catch (e) {
            setListError(errorText(e));
          }
        }}
      />
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
            {title ?? (id ? "Conversation" : "New conversation")}
          </h1>
          <ConnectionBadge />
          <Button
            variant="ghost"
            title="Workspace files, in the side pane"
            aria-pressed={pane.item?.kind === "files"}
            onClick={() => (pane.item?.kind === "files" ? pane.close() : pane.open({ kind: "files" }))}
          >
            Files
          </Button>
        </div>
        <div className="min-h-0 flex-1 overflow-y-auto px-3 py-4" aria-live="polite" aria-busy={chat.streaming}>
          <div className="mx-auto max-w-3xl space-y-4">
            {snap.loading ? <p className="text-sm text-slate-500 dark:text-slate-400">Loading…</p> : null}
            {snap.loadError ? <ErrorBox>{snap.loadError}</ErrorBox> : null}
            {!snap.loading && chat.messages.length === 0 ? (
              <EmptyChat onPick={(text) => store.send(text)} disabled={chat.streaming} />
            ) : null}
            {chat.messages.map((m, i) => (
              <MessageView
                key={m.key}
                message={m}
                live={chat.streaming && i === chat.messages.length - 1}
                actions={sendActions}
                canRetry={!chat.streaming && i === chat.messages.length - 1}
                rewrite={rewrite}
                canRegenerate={regenerable && i === chat.messages.length - 1}
              />
            ))}
            {chat.error ? <ChatErrorView code={chat.error.code} message={chat.error.message} /> : null}
            <div ref={bottom} />
          </div>
        </div>
        <EgressPrompt prompts={store.egress} />
        <Composer
          attach={attach}
          streaming={chat.streaming}
          restore={snap.draft}
          onSend={(text, voice, files) => store.send(text, voice, files)}
          onStop={() => store.stop()}
        />
      </section>
      <SidePane pane={pane} />
    </div>
  );
}
