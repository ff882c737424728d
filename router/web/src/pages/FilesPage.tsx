import { useCallback, useEffect, useRef, useState } from "react";
import { Button, ErrorBox, errorText, PageTitle } from "../components/ui";
import { useServices } from "../context";
import { formatBytes, formatDate } from "../lib/settings";
import type { FileView } from "../lib/types";

const TEXTY = /^(text\/|application\/(json|xml|javascript|x-sh|x-python|toml|yaml|x-yaml))/;
const PREVIEW_LIMIT = 200_000;

function Preview({ file, onClose }: { file: FileView; onClose: () => void }) {
  const { api } = useServices();
  const [text, setText] = useState<string | null>(null);
  const [img, setImg] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let url: string | null = null;
    let cancelled = false;
    api
      .blob(`/api/files/${file.id}/download`)
      .then(async (b) => {
        if (cancelled) return;
        if (file.content_type.startsWith("image/")) {
          url = URL.createObjectURL(b);
          setImg(url);
        } else {
          const t = await b.slice(0, PREVIEW_LIMIT).text();
          setText(b.size > PREVIEW_LIMIT ? t + "\n… (truncated)" : t);
        }
      })
      .catch((e) => !cancelled && setError(errorText(e)));
    return () => {
      cancelled = true;
      if (url) URL.revokeObjectURL(url);
    };
  }, [api, file]);
  return (
    <div className="mt-3 rounded-lg border border-slate-200 p-3 dark:border-slate-800" aria-label={`Preview of ${file.filename}`} role="region">
      <div className="mb-2 flex items-center gap-2">
        <h2 className="min-w-0 flex-1 truncate font-medium">{file.path}</h2>
        <Button onClick={onClose}>Close</Button>
      </div>
      {error ? <ErrorBox>{error}</ErrorBox> : null}
      {img ? <img src={img} alt={file.filename} className="max-h-[60vh] max-w-full" /> : null}
      {text !== null ? <pre className="max-h-[60vh] overflow-auto whitespace-pre-wrap font-mono text-xs">{text}</pre> : null}
      {!error && !img && text === null ? <p className="text-sm text-slate-500 dark:text-slate-400">Loading…</p> : null}
    </div>
  );
}

/** A small icon for a phone's icon-only buttons. */
function Icon({ d }: { d: string }) {
  return (
    <svg aria-hidden viewBox="0 0 16 16" className="h-4 w-4 fill-none stroke-current sm:hidden" strokeWidth="1.3" strokeLinecap="round" strokeLinejoin="round">
      <path d={d} />
    </svg>
  );
}

const THUMB_LIMIT = 5 * 1024 * 1024;

/** An image file's thumbnail (fetched with the session's token, like a download); a file icon otherwise. */
function Thumb({ file }: { file: FileView }) {
  const { api } = useServices();
  const [url, setUrl] = useState<string | null>(null);
  const image = file.content_type.startsWith("image/") && file.size <= THUMB_LIMIT;
  useEffect(() => {
    if (!image) return;
    let made: string | null = null;
    let live = true;
    api
      .blob(`/api/files/${file.id}/download`)
      .then((b) => {
        if (!live) return;
        made = URL.createObjectURL(b);
        setUrl(made);
      })
      .catch(() => {});
    return () => {
      live = false;
      if (made) URL.revokeObjectURL(made);
    };
  }, [api, file.id, file.updated_at, image]);
  return (
    <span className="flex h-8 w-8 shrink-0 items-center justify-center overflow-hidden rounded border border-slate-200 bg-slate-50 dark:border-slate-700 dark:bg-slate-900">
      {url ? (
        <img src={url} alt="" className="h-full w-full object-cover" data-testid="file-thumb" />
      ) : (
        <svg aria-hidden viewBox="0 0 16 16" className="h-4 w-4 fill-none stroke-slate-500" strokeWidth="1.2" strokeLinejoin="round">
          <path d="M4 1.5h5l3 3v10H4z M9 1.5v3h3" />
        </svg>
      )}
    </span>
  );
}

export function FilesPage() {
  const { api } = useServices();
  const [files, setFiles] = useState<FileView[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [preview, setPreview] = useState<FileView | null>(null);

  const [progress, setProgress] = useState<number | null>(null);
  const input = useRef<HTMLInputElement>(null);

  const load = useCallback(
    () =>
      api
        .get<{ files: FileView[] }>("/api/files?limit=200")
        .then((r) => setFiles(r.files))
        .catch((e) => setError(errorText(e))),
    [api],
  );

  useEffect(() => {
    void load();
  }, [load]);

  async function upload(list: FileList | null) {
    const picked = Array.from(list ?? []);
    if (picked.length === 0) return;
    setError(null);
    setProgress(0);
    try {
      await api.upload(picked, setProgress);
    } catch (e) {
      setError(errorText(e));
    } finally {
      setProgress(null);
      await load();
    }
  }

  async function remove(f: FileView) {
    if (!window.confirm(`Delete ${f.path}? It is removed from your workspace too.`)) return;
    try {
      await api.json("DELETE", `/api/files/${f.id}`);
      if (preview?.id === f.id) setPreview(null);
    } catch (e) {
      setError(errorText(e));
    }
    await load();
  }

  const canPreview = (f: FileView) => f.content_type.startsWith("image/") || TEXTY.test(f.content_type);

  return (
    <main className="mx-auto max-w-5xl overflow-y-auto p-4">
      <PageTitle>Workspace files</PageTitle>
      <p className="mb-3 text-sm text-slate-600 dark:text-slate-400">Files you uploaded and files Jarvis wrote in your workspace.</p>
      <div className="mb-3 flex items-center gap-2">
        <input ref={input} type="file" multiple hidden data-testid="files-upload-input" onChange={(e) => { void upload(e.target.files); e.target.value = ""; }} />
        <Button variant="primary" onClick={() => input.current?.click()} disabled={progress !== null}>
          Upload files
        </Button>
        {progress !== null ? <progress max={1} value={progress} aria-label="Uploading" className="h-2 w-40" /> : null}
      </div>
      {error ? <ErrorBox>{error}</ErrorBox> : null}
      {files && files.length === 0 ? <p className="text-sm text-slate-600 dark:text-slate-400">No files yet.</p> : null}
      {preview ? <Preview key={preview.id} file={preview} onClose={() => setPreview(null)} /> : null}
      {files && files.length > 0 ? (
        <table className="mt-3 w-full table-fixed text-left text-sm">
          <thead className="text-xs uppercase text-slate-600 dark:text-slate-400">
            <tr>
              <th className="py-1">Path</th>
              <th className="hidden w-20 py-1 sm:table-cell">Size</th>
              <th className="hidden w-44 py-1 sm:table-cell">Updated</th>
              <th className="w-36 py-1 sm:w-64"><span className="sr-only">Actions</span></th>
            </tr>
          </thead>
          <tbody>
            {files.map((f) => (
              <tr key={f.id} className="border-t border-slate-200 dark:border-slate-800" data-testid="file-row">
                <td className="py-1.5 pr-2">
                  <div className="flex min-w-0 items-center gap-2">
                    <Thumb file={f} />
                    <div className="min-w-0 flex-1">
                      <div className="flex min-w-0 items-baseline gap-1">
                        <span className="min-w-0 font-mono max-sm:truncate sm:[overflow-wrap:anywhere]" title={f.path} data-testid="file-name">
                          {f.path}
                        </span>
                        {f.kind === "upload" ? <span className="shrink-0 text-xs text-slate-600 max-sm:hidden dark:text-slate-400">(upload)</span> : null}
                      </div>
                      <div className="text-xs text-slate-600 sm:hidden dark:text-slate-400">
                        {f.kind === "upload" ? "Upload · " : null}
                        {formatBytes(f.size)} · {formatDate(f.updated_at)}
                      </div>
                    </div>
                  </div>
                </td>
                <td className="hidden py-1.5 sm:table-cell">{formatBytes(f.size)}</td>
                <td className="hidden py-1.5 sm:table-cell">{formatDate(f.updated_at)}</td>
                <td className="whitespace-nowrap py-1.5 text-right">
                  {canPreview(f) ? (
                    <Button variant="ghost" className="max-sm:px-2" onClick={() => setPreview(f)} aria-label={`Preview ${f.filename}`} title="Preview">
                      <Icon d="M1.5 8s2.5-4.5 6.5-4.5S14.5 8 14.5 8 12 12.5 8 12.5 1.5 8 1.5 8zM8 10a2 2 0 1 0 0-4 2 2 0 0 0 0 4z" />
                      <span className="max-sm:hidden">Preview</span>
                    </Button>
                  ) : null}
                  <Button variant="ghost" className="max-sm:px-2" onClick={() => api.download(`/api/files/${f.id}/download`, f.filename).catch((e) => setError(errorText(e)))} aria-label={`Download ${f.filename}`} title="Download">
                    <Icon d="M8 2v8m-3.5-3.5L8 10l3.5-3.5M2.5 13.5h11" />
                    <span className="max-sm:hidden">Download</span>
                  </Button>
                  <Button variant="ghost" className="text-red-700 max-sm:px-2 dark:text-red-300" onClick={() => void remove(f)} aria-label={`Delete ${f.filename}`} title="Delete">
                    <Icon d="M2.5 4h11M6 4V2.5h4V4m-6.5 0 .7 9.5h7.6l.7-9.5" />
                    <span className="max-sm:hidden">Delete</span>
                  </Button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </main>
  );
}
