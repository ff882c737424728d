import { useEffect, useId, useMemo, useState } from "react";
import { Link } from "react-router";
import { useApi } from "../context";
import { groupByDate } from "../lib/titles";
import type { ConversationSummary } from "../lib/types";
import { Button, ErrorBox, errorText, inputClass } from "./ui";

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
      <button type="button" className="rounded px-1.5 text-xs text-slate-500 dark:text-slate-400 hover:text-slate-900 dark:hover:text-white" aria-label={`Rename ${c.title}`} onClick={() => { setTitle(c.title); setEditing(true); }}>
        ✎
      </button>
      <button
        type="button"
        className="rounded px-1.5 text-xs text-slate-500 dark:text-slate-400 hover:text-red-600"
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

/** Conversations whose title or messages have every word of `q` (the server
 * searches), again whenever the list changes; null while there is no query. */
function useSearch(q: string, convs: ConversationSummary[] | null) {
  const api = useApi();
  const [found, setFound] = useState<ConversationSummary[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const query = q.trim();
  useEffect(() => {
    if (!query) {
      setFound(null);
      setError(null);
      return;
    }
    let cancelled = false;
    const t = setTimeout(() => {
      api
        .get<{ conversations: ConversationSummary[] }>(`/api/conversations?limit=100&q=${encodeURIComponent(query)}`)
        .then((r) => {
          if (cancelled) return;
          setFound(r.conversations);
          setError(null);
        })
        .catch((e) => !cancelled && setError(errorText(e)));
    }, 250);
    return () => {
      cancelled = true;
      clearTimeout(t);
    };
  }, [api, query, convs]);
  return { query, found, error };
}

/** The sidebar: a new conversation, a search box, and the user's conversations by date of last activity. */
export function ConversationList({
  convs,
  error,
  activeId,
  open,
  onClose,
  onNew,
  onRename,
  onDelete,
}: {
  convs: ConversationSummary[] | null;
  error: string | null;
  activeId: string | undefined;
  /** Shown over the chat on narrow screens. */
  open: boolean;
  onClose: () => void;
  onNew: () => void;
  onRename: (c: ConversationSummary, title: string) => Promise<void>;
  onDelete: (c: ConversationSummary) => Promise<void>;
}) {
  const [q, setQ] = useState("");
  const searchId = useId();
  const search = useSearch(q, convs);
  const shown = search.query ? search.found : convs;
  const groups = useMemo(() => groupByDate(shown ?? []), [shown]);
  return (
    <aside
      className={`${open ? "fixed inset-x-0 bottom-0 top-14 z-20 flex bg-white dark:bg-slate-950" : "hidden"} w-full shrink-0 flex-col border-r border-slate-200 p-2 md:static md:flex md:w-64 dark:border-slate-800`}
      aria-label="Conversations"
    >
      <Button variant="primary" className="mb-2 w-full" onClick={() => { onClose(); onNew(); }}>
        + New conversation
      </Button>
      <form role="search" className="mb-2" onSubmit={(e) => e.preventDefault()}>
        <label htmlFor={searchId} className="sr-only">Search conversations</label>
        <input
          id={searchId}
          type="search"
          placeholder="Search conversations"
          className={`${inputClass} py-1.5`}
          value={q}
          onChange={(e) => setQ(e.target.value)}
          onKeyDown={(e) => e.key === "Escape" && setQ("")}
        />
      </form>
      {error ? <ErrorBox>{error}</ErrorBox> : null}
      {search.error ? <ErrorBox>{search.error}</ErrorBox> : null}
      <p className="sr-only" aria-live="polite">
        {search.query && search.found ? `${search.found.length} conversation${search.found.length === 1 ? "" : "s"} found` : ""}
      </p>
      {!search.query && convs && convs.length === 0 ? <p className="p-2 text-sm text-slate-500 dark:text-slate-400">No conversations yet.</p> : null}
      {search.query && search.found && search.found.length === 0 ? (
        <p className="p-2 text-sm text-slate-500 dark:text-slate-400" data-testid="no-conversation-found">No conversation matches.</p>
      ) : null}
      <div className="min-h-0 flex-1 overflow-y-auto" onClick={onClose}>
        {groups.map((g) => (
          <section key={g.label} aria-label={g.label} className="mb-2" data-testid="conversation-group">
            <h2 className="px-2 pb-0.5 pt-1 text-xs font-medium text-slate-500 dark:text-slate-400">{g.label}</h2>
            <ul className="space-y-0.5">
              {g.items.map((c) => (
                <ConversationItem
                  key={c.id}
                  c={c}
                  active={c.id === activeId}
                  onRename={(title) => onRename(c, title)}
                  onDelete={() => onDelete(c)}
                />
              ))}
            </ul>
          </section>
        ))}
      </div>
    </aside>
  );
}
