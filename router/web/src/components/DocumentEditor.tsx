import { useEffect, useId, useState } from "react";
import { useApi } from "../context";
import type { Doc } from "../lib/types";
import { Button, ErrorBox, errorText, inputClass } from "./ui";

/** Edits a document's name and content; Save sends `PUT /api/documents/{id}`.
 * `onDirtyChange` hears whether there are unsaved edits (false again once gone). */
export function DocumentEditor({
  doc,
  onSaved,
  onCancel,
  onDirtyChange,
}: {
  doc: Doc;
  onSaved: (doc: Doc) => void;
  onCancel: () => void;
  onDirtyChange?: (dirty: boolean) => void;
}) {
  const api = useApi();
  const [filename, setFilename] = useState(doc.filename);
  const [content, setContent] = useState(doc.content);
  const [saving, setSaving] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const nameId = useId();
  const contentId = useId();
  const dirty = filename !== doc.filename || content !== doc.content;
  useEffect(() => onDirtyChange?.(dirty), [dirty, onDirtyChange]);
  useEffect(() => () => onDirtyChange?.(false), [onDirtyChange]);

  async function save(e?: React.FormEvent) {
    e?.preventDefault();
    setSaving(true);
    setError(null);
    try {
      const body: Record<string, string> = { content };
      if (filename !== doc.filename) body.filename = filename;
      const saved = await api.json<Doc>("PUT", `/api/documents/${encodeURIComponent(doc.id)}`, body);
      onSaved(saved);
    } catch (err) {
      setError(errorText(err));
    } finally {
      setSaving(false);
    }
  }

  return (
    <form
      onSubmit={save}
      onKeyDown={(e) => {
        if ((e.ctrlKey || e.metaKey) && e.key === "s") {
          e.preventDefault();
          void save();
        }
      }}
      className="flex h-full flex-col gap-3"
    >
      <div>
        <label htmlFor={nameId} className="mb-1 block text-sm font-medium">
          File name
        </label>
        <input id={nameId} className={inputClass} value={filename} onChange={(e) => setFilename(e.target.value)} />
      </div>
      <div className="flex min-h-0 flex-1 flex-col">
        <label htmlFor={contentId} className="mb-1 block text-sm font-medium">
          Content
        </label>
        <textarea
          id={contentId}
          className={`${inputClass} min-h-[50vh] flex-1 font-mono`}
          value={content}
          spellCheck={doc.type !== "code"}
          onChange={(e) => setContent(e.target.value)}
        />
      </div>
      {error ? <ErrorBox>Not saved: {error}</ErrorBox> : null}
      <div className="flex gap-2">
        <Button type="submit" variant="primary" disabled={saving || !dirty}>
          {saving ? "Saving…" : "Save"}
        </Button>
        <Button onClick={onCancel} disabled={saving}>
          Cancel
        </Button>
      </div>
    </form>
  );
}
