// The chat's side pane: a document, an upload or a workspace file beside the
// chat (a full-screen overlay on phones), previewed, documents editable in
// place. Unsaved edits are never dropped without asking.

import { lazy, Suspense, useCallback, useEffect, useRef, useState } from "react";
import { Link } from "react-router";
import { useServices } from "../context";
import { DISCARD_QUESTION, previewKind, type PaneItem } from "../lib/pane";
import { formatBytes } from "../lib/settings";
import type { Doc, FileView } from "../lib/types";
import { DocumentEditor } from "./DocumentEditor";
import { CodeView, LazyMarkdown } from "./LazyMarkdown";
import { Button, ErrorBox, errorText } from "./ui";

const TEXT_LIMIT = 200_000;

// PDF.js loads only when a PDF is opened.
const PdfView = lazy(() => import("./PdfView"));

/** What the pane shows and whether it holds unsaved edits; opening another item
 * or closing asks first when it does. */
const ask = (question: string) => window.confirm(question);

export function usePane(confirm: (question: string) => boolean = ask) {
  const [item, setItem] = useState<PaneItem | null>(null);
  const [dirty, setDirtyState] = useState(false);
  // Read by open/close, which messages hold on to between renders.
  const dirtyRef = useRef(false);
  const setDirty = useCallback((d: boolean) => {
    dirtyRef.current = d;
    setDirtyState(d);
  }, []);
  // Where focus was when the pane opened: it goes back there on close.
  const opener = useRef<HTMLElement | null>(null);
  const mayDiscard = useCallback(() => !dirtyRef.current || confirm(DISCARD_QUESTION), [confirm]);
  const open = useCallback(
    (next: PaneItem) => {
      if (!mayDiscard()) return false;
      setDirty(false);
      setItem((current) => {
        if (!current && document.activeElement instanceof HTMLElement) opener.current = document.activeElement;
        return next;
      });
      return true;
    },
    [mayDiscard, setDirty],
  );
  const close = useCallback(() => {
    if (!mayDiscard()) return false;
    setDirty(false);
    setItem(null);
    const back = opener.current;
    opener.current = null;
    if (back?.isConnected) setTimeout(() => back.focus(), 0);
    return true;
  }, [mayDiscard, setDirty]);
  return { item, dirty, setDirty, open, close, mayDiscard };
}

export type Pane = ReturnType<typeof usePane>;

function paneTitle(item: PaneItem) {
  return item.kind === "files" ? "Workspace files" : item.filename;
}

/** The pane itself: beside the chat from 1024 px, over everything below. */
export function SidePane({ pane }: { pane: Pane }) {
  const { item } = pane;
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    heading.current?.focus();
  }, [item]);
  if (!item) return null;
  const title = paneTitle(item);
  return (
    <aside
      aria-label={`Side pane: ${title}`}
      data-testid="side-pane"
      className="fixed inset-0 z-30 flex flex-col bg-white lg:static lg:z-auto lg:w-[28rem] lg:shrink-0 lg:border-l lg:border-slate-200 xl:w-[36rem] dark:bg-slate-950 lg:dark:border-slate-800"
      onKeyDown={(e) => {
        if (e.key === "Escape" && !e.defaultPrevented && (e.target as HTMLElement).tagName !== "TEXTAREA") pane.close();
      }}
    >
      <div className="flex h-12 shrink-0 items-center gap-1 border-b border-slate-200 px-3 dark:border-slate-800">
        <h2 ref={heading} tabIndex={-1} className="min-w-0 flex-1 truncate text-sm font-medium focus:outline-none" title={title}>
          {title}
        </h2>
        {item.kind !== "files" ? (
          <Button variant="ghost" onClick={() => pane.open({ kind: "files" })}>
            All files
          </Button>
        ) : null}
        <Button variant="ghost" aria-label="Close pane" onClick={() => pane.close()} className="min-h-9 min-w-9">
          <span aria-hidden>✕</span>
        </Button>
      </div>
      <div className="min-h-0 flex-1 overflow-y-auto p-3">
        {item.kind === "document" ? (
          <DocumentPane key={item.id} id={item.id} pane={pane} />
        ) : item.kind === "file" ? (
          <FilePane key={item.id} item={item} />
        ) : (
          <FileBrowser onOpen={(f) => pane.open({ kind: "file", id: f.id, filename: f.filename, contentType: f.content_type })} />
        )}
      </div>
    </aside>
  );
}

/** A document: rendered, with Edit (in place), Download and a link to the documents page. */
function DocumentPane({ id, pane }: { id: string; pane: Pane }) {
  const { api, chat } = useServices();
  const [doc, setDoc] = useState<Doc | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [editing, setEditing] = useState(false);

  const load = useCallback(
    () =>
      api
        .get<Doc>(`/api/documents/${encodeURIComponent(id)}`)
        .then((d) => {
          setDoc(d);
          setError(null);
        })
        .catch((e) => setError(errorText(e))),
    [api, id],
  );
  useEffect(() => {
    void load();
  }, [load]);
  // The agent saving this document again shows its new content (unless being edited).
  useEffect(() => chat.onFrame((f) => f.type === "document" && f.id === id && !editing && void load()), [chat, id, editing, load]);

  if (error) return <ErrorBox>{error}</ErrorBox>;
  if (!doc) return <p className="text-sm text-slate-500 dark:text-slate-400">Loading…</p>;
  if (editing)
    return (
      <DocumentEditor
        doc={doc}
        onDirtyChange={pane.setDirty}
        onCancel={() => {
          if (!pane.mayDiscard()) return;
          setEditing(false);
        }}
        onSaved={(d) => {
          setDoc(d);
          setEditing(false);
        }}
      />
    );
  return (
    <div className="space-y-3">
      <div className="flex flex-wrap items-center gap-2">
        <Button onClick={() => setEditing(true)}>Edit</Button>
        <Button onClick={() => api.download(`/api/documents/${encodeURIComponent(doc.id)}/download`, doc.filename).catch((e) => setError(errorText(e)))}>
          Download
        </Button>
        <Link to={`/documents/${doc.id}`} className="text-sm text-blue-700 underline dark:text-blue-400">
          Open in Documents
        </Link>
      </div>
      <p className="text-xs text-slate-500 dark:text-slate-400">
        {doc.type} · {formatBytes(doc.size)}
      </p>
      <div data-testid="pane-content" className="min-w-0 overflow-x-auto">
        {doc.type === "markdown" ? (
          <LazyMarkdown text={doc.content} />
        ) : doc.type === "code" ? (
          <CodeView code={doc.content} filename={doc.filename} />
        ) : (
          <pre className="whitespace-pre-wrap font-mono text-sm">{doc.content}</pre>
        )}
      </div>
    </div>
  );
}

type Loaded =
  | { blob: true; kind: "image" | "pdf" | "other"; url: string; data: Blob; size: number }
  | { blob: false; kind: "markdown" | "code" | "text"; text: string; size: number };

/** An upload or workspace file: images as images, PDFs as their pages (PDF.js:
 * the router's Content-Security-Policy allows no frames or plugins), Markdown
 * rendered, code highlighted, text as text; anything else as a download. */
function FilePane({ item }: { item: Extract<PaneItem, { kind: "file" }> }) {
  const { api } = useServices();
  const [loaded, setLoaded] = useState<Loaded | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let url: string | null = null;
    let cancelled = false;
    api
      .blob(`/api/files/${encodeURIComponent(item.id)}/download`)
      .then(async (b) => {
        if (cancelled) return;
        const kind = previewKind(item.filename, b.type || item.contentType);
        if (kind === "markdown" || kind === "code" || kind === "text") {
          const t = await b.slice(0, TEXT_LIMIT).text();
          if (!cancelled) setLoaded({ blob: false, kind, text: b.size > TEXT_LIMIT ? t + "\n… (truncated)" : t, size: b.size });
        } else {
          url = URL.createObjectURL(b);
          setLoaded({ blob: true, kind, url, data: b, size: b.size });
        }
      })
      .catch((e) => !cancelled && setError(errorText(e)));
    return () => {
      cancelled = true;
      if (url) URL.revokeObjectURL(url);
    };
  }, [api, item]);

  const download = (
    <Button onClick={() => api.download(`/api/files/${encodeURIComponent(item.id)}/download`, item.filename).catch((e) => setError(errorText(e)))}>
      Download
    </Button>
  );
  if (error) return <ErrorBox action={download}>{error}</ErrorBox>;
  if (!loaded) return <p className="text-sm text-slate-500 dark:text-slate-400">Loading…</p>;
  return (
    <div className="space-y-3">
      <div className="flex items-center gap-2">
        {download}
        <span className="text-xs text-slate-500 dark:text-slate-400">{formatBytes(loaded.size)}</span>
      </div>
      <div data-testid="pane-content" className="min-w-0 overflow-x-auto">
        {loaded.blob && loaded.kind === "image" ? (
          <img src={loaded.url} alt={item.filename} className="max-h-[75vh] max-w-full rounded" />
        ) : loaded.blob && loaded.kind === "pdf" ? (
          <Suspense fallback={<p className="text-sm text-slate-500 dark:text-slate-400">Opening the PDF…</p>}>
            <PdfView data={loaded.data} filename={item.filename} />
          </Suspense>
        ) : loaded.blob ? (
          <p className="text-sm text-slate-600 dark:text-slate-400">No preview for this kind of file. Download it to open it.</p>
        ) : loaded.kind === "markdown" ? (
          <LazyMarkdown text={loaded.text} />
        ) : loaded.kind === "code" ? (
          <CodeView code={loaded.text} filename={item.filename} />
        ) : (
          <pre className="whitespace-pre-wrap font-mono text-sm">{loaded.text}</pre>
        )}
      </div>
    </div>
  );
}

/** The workspace's files (uploads included), to open one. */
function FileBrowser({ onOpen }: { onOpen: (f: FileView) => void }) {
  const { api } = useServices();
  const [files, setFiles] = useState<FileView[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let cancelled = false;
    api
      .get<{ files: FileView[] }>("/api/files?limit=200")
      .then((r) => !cancelled && setFiles(r.files.filter((f) => f.kind !== "voice")))
      .catch((e) => !cancelled && setError(errorText(e)));
    return () => {
      cancelled = true;
    };
  }, [api]);
  if (error) return <ErrorBox>{error}</ErrorBox>;
  if (!files) return <p className="text-sm text-slate-500 dark:text-slate-400">Loading…</p>;
  if (files.length === 0) return <p className="text-sm text-slate-500 dark:text-slate-400">No files yet. Uploads and files Jarvis writes show up here.</p>;
  return (
    <ul className="space-y-0.5" aria-label="Files">
      {files.map((f) => (
        <li key={f.id}>
          <button
            type="button"
            className="flex w-full items-center gap-2 rounded-md px-2 py-1.5 text-left text-sm hover:bg-slate-100 dark:hover:bg-slate-900"
            onClick={() => onOpen(f)}
          >
            <span className="min-w-0 flex-1 truncate" title={f.path}>
              {f.path}
            </span>
            <span className="shrink-0 text-xs text-slate-500 dark:text-slate-400">{formatBytes(f.size)}</span>
          </button>
        </li>
      ))}
    </ul>
  );
}
