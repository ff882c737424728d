import { useId, useState } from "react";
import { Link } from "react-router";
import type { ConversationSummary } from "../lib/types";
import { Button, ErrorBox, inputClass } from "./ui";

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

/** The sidebar: a new conversation, and the list of the user's conversations. */
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
  return (
    <aside
      className={`${open ? "fixed inset-x-0 bottom-0 top-14 z-20 block bg-white dark:bg-slate-950" : "hidden"} w-full shrink-0 border-r border-slate-200 p-2 md:static md:block md:w-64 dark:border-slate-800`}
      aria-label="Conversations"
    >
      <Button variant="primary" className="mb-2 w-full" onClick={() => { onClose(); onNew(); }}>
        + New conversation
      </Button>
      {error ? <ErrorBox>{error}</ErrorBox> : null}
      {convs && convs.length === 0 ? <p className="p-2 text-sm text-slate-500">No conversations yet.</p> : null}
      <ul className="space-y-0.5" onClick={onClose}>
        {convs?.map((c) => (
          <ConversationItem
            key={c.id}
            c={c}
            active={c.id === activeId}
            onRename={(title) => onRename(c, title)}
            onDelete={() => onDelete(c)}
          />
        ))}
      </ul>
    </aside>
  );
}
