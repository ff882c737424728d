import { useCallback, useEffect, useId, useState } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { DocumentEditor } from "../components/DocumentEditor";
import { UnsavedChangesGuard } from "../components/UnsavedChangesGuard";
import { CodeView, LazyMarkdown } from "../components/LazyMarkdown";
import { Button, ErrorBox, errorText, inputClass, PageTitle } from "../components/ui";
import { useServices } from "../context";
import { DISCARD_QUESTION } from "../lib/pane";
import { formatBytes, formatDate } from "../lib/settings";
import type { Doc, DocumentSummary } from "../lib/types";

function DocumentView({ id, onChanged }: { id: string; onChanged: () => void }) {
  const { api } = useServices();
  const navigate = useNavigate();
  const [doc, setDoc] = useState<Doc | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [editing, setEditing] = useState(false);
  // Unsaved edits: leaving the page or the document asks first.
  const [dirty, setDirty] = useState(false);

  useEffect(() => {
    let cancelled = false;
    setDoc(null);
    setError(null);
    setEditing(false);
    api
      .get<Doc>(`/api/documents/${encodeURIComponent(id)}`)
      .then((d) => !cancelled && setDoc(d))
      .catch((e) => !cancelled && setError(errorText(e)));
    return () => {
      cancelled = true;
    };
  }, [api, id]);

  if (error) return <ErrorBox>{error}</ErrorBox>;
  if (!doc) return <p className="text-sm text-slate-500 dark:text-slate-400">Loading…</p>;
  if (editing)
    return (
      <>
        <UnsavedChangesGuard dirty={dirty} />
        <DocumentEditor
          doc={doc}
          onDirtyChange={setDirty}
          onCancel={() => {
            if (dirty && !window.confirm(DISCARD_QUESTION)) return;
            setEditing(false);
          }}
          onSaved={(d) => {
            setDoc(d);
            setEditing(false);
            onChanged();
          }}
        />
      </>
    );
  return (
    <article aria-labelledby="doc-title" className="space-y-3">
      <div className="flex flex-wrap items-center gap-2">
        <Link to="/documents" className="text-sm text-blue-600 underline md:hidden dark:text-blue-400">
          ← All documents
        </Link>
        <h2 id="doc-title" className="min-w-0 flex-1 truncate text-lg font-semibold">{doc.filename}</h2>
        <Button onClick={() => setEditing(true)}>Edit</Button>
        <Button
          onClick={() =>
            api.download(`/api/documents/${encodeURIComponent(doc.id)}/download`, doc.filename).catch((e) => setError(errorText(e)))
          }
        >
          Download
        </Button>
        <Button
          variant="ghost"
          className="text-red-600"
          onClick={async () => {
            if (!window.confirm(`Delete ${doc.filename}?`)) return;
            try {
              await api.json("DELETE", `/api/documents/${doc.id}`);
              onChanged();
              navigate("/documents");
            } catch (e) {
              setError(errorText(e));
            }
          }}
        >
          Delete
        </Button>
      </div>
      <p className="text-xs text-slate-500 dark:text-slate-400">
        {doc.type} · {formatBytes(doc.size)} · updated {formatDate(doc.updated_at)}
      </p>
      <div className="rounded-lg border border-slate-200 p-4 dark:border-slate-800" data-testid="document-content">
        {doc.type === "markdown" ? (
          <LazyMarkdown text={doc.content} />
        ) : doc.type === "code" ? (
          <CodeView code={doc.content} filename={doc.filename} />
        ) : (
          <pre className="whitespace-pre-wrap font-mono text-sm">{doc.content}</pre>
        )}
      </div>
    </article>
  );
}

export function DocumentsPage() {
  const { id } = useParams();
  const { api, chat } = useServices();
  const [q, setQ] = useState("");
  const [docs, setDocs] = useState<DocumentSummary[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const searchId = useId();

  const load = useCallback(
    async (query: string) => {
      try {
        const qs = query.trim() ? `?q=${encodeURIComponent(query.trim())}&limit=100` : "?limit=100";
        const r = await api.get<{ documents: DocumentSummary[] }>(`/api/documents${qs}`);
        setDocs(r.documents);
        setError(null);
      } catch (e) {
        setError(errorText(e));
      }
    },
    [api],
  );

  useEffect(() => {
    const t = setTimeout(() => void load(q), q ? 250 : 0);
    return () => clearTimeout(t);
  }, [q, load]);

  // Documents the agent saves appear without a reload.
  useEffect(() => chat.onFrame((f) => f.type === "document" && void load(q)), [chat, load, q]);

  return (
    <div className="flex h-full min-h-0">
      <aside className={`${id ? "hidden md:block" : "block"} w-full shrink-0 overflow-y-auto border-r border-slate-200 p-3 md:w-80 dark:border-slate-800`} aria-label="Document list">
        <PageTitle>Documents</PageTitle>
        <form role="search" className="my-3" onSubmit={(e) => { e.preventDefault(); void load(q); }}>
          <label htmlFor={searchId} className="sr-only">Search documents</label>
          <input id={searchId} type="search" placeholder="Search documents" className={inputClass} value={q} onChange={(e) => setQ(e.target.value)} />
        </form>
        {error ? <ErrorBox>{error}</ErrorBox> : null}
        {docs && docs.length === 0 ? (
          <p className="text-sm text-slate-500 dark:text-slate-400" data-testid="no-documents">
            {q ? "No document matches." : "No documents yet. Documents Jarvis saves show up here."}
          </p>
        ) : null}
        <ul className="space-y-1" data-testid="document-list">
          {docs?.map((d) => (
            <li key={d.id}>
              <Link
                to={`/documents/${d.id}`}
                aria-current={d.id === id ? "page" : undefined}
                className={`block rounded-md px-2 py-1.5 ${d.id === id ? "bg-slate-200 dark:bg-slate-800" : "hover:bg-slate-100 dark:hover:bg-slate-900"}`}
              >
                <div className="truncate text-sm font-medium">{d.filename}</div>
                <div className="text-xs text-slate-600 dark:text-slate-400">
                  {d.type} · {formatBytes(d.size)} · {formatDate(d.updated_at)}
                </div>
              </Link>
            </li>
          ))}
        </ul>
      </aside>
      <section className={`${id ? "block" : "hidden md:block"} min-w-0 flex-1 overflow-y-auto p-4`} aria-label="Document">
        {id ? <DocumentView key={id} id={id} onChanged={() => void load(q)} /> : <p className="text-sm text-slate-500 dark:text-slate-400">Choose a document to read or edit.</p>}
      </section>
    </div>
  );
}
