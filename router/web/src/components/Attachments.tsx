// Files attached to the message being written: uploaded as soon as they are
// picked or dropped (with progress), sent with the message as file ids.

import { useCallback, useState } from "react";
import type { Api } from "../lib/api";
import type { Attachment } from "../lib/stream";
import { AttachmentChip } from "./MessageView";
import { errorText } from "./ui";

export interface PendingUpload {
  batch: number;
  index: number;
  name: string;
  /** 0..1 of the batch's bytes sent. */
  progress: number;
  /** Set once stored. */
  file?: Attachment;
  error?: string;
}

let batches = 0;

/** The attachments of the draft and how to add, drop and take them. */
export function useUploads(api: Api) {
  const [uploads, setUploads] = useState<PendingUpload[]>([]);

  const add = useCallback(
    async (list: FileList | File[] | null) => {
      const files = Array.from(list ?? []);
      if (files.length === 0) return;
      const batch = ++batches;
      const update = (f: (u: PendingUpload) => PendingUpload) =>
        setUploads((all) => all.map((u) => (u.batch === batch ? f(u) : u)));
      setUploads((all) => [...all, ...files.map((f, index) => ({ batch, index, name: f.name, progress: 0 }))]);
      try {
        const stored = await api.upload(files, (progress) => update((u) => ({ ...u, progress })));
        update((u) => {
          const s = stored[u.index];
          return s ? { ...u, progress: 1, name: s.filename, file: { id: s.id, filename: s.filename } } : u;
        });
      } catch (e) {
        update((u) => ({ ...u, error: errorText(e) }));
      }
    },
    [api],
  );

  const remove = useCallback((u: PendingUpload) => {
    setUploads((all) => all.filter((x) => x !== u));
  }, []);

  const busy = uploads.some((u) => !u.file && !u.error);
  const ready: Attachment[] = uploads.flatMap((u) => (u.file ? [u.file] : []));
  const clear = useCallback(() => setUploads([]), []);
  return { uploads, add, remove, busy, ready, clear };
}

/** The draft's attachments: name, progress or error, and a remove button. */
export function PendingAttachments({ uploads, onRemove }: { uploads: PendingUpload[]; onRemove: (u: PendingUpload) => void }) {
  if (uploads.length === 0) return null;
  return (
    <ul className="mx-auto mb-2 flex max-w-3xl flex-wrap gap-1" aria-label="Attached files" data-testid="pending-attachments">
      {uploads.map((u) => (
        <li key={`${u.batch}-${u.index}`} className={u.error ? "text-red-700 dark:text-red-300" : ""}>
          <AttachmentChip filename={u.name}>
            {!u.file && !u.error ? (
              <progress className="h-1.5 w-16" max={1} value={u.progress} aria-label={`Uploading ${u.name}`} />
            ) : null}
            {u.error ? <span role="alert" className="text-xs">{u.error}</span> : null}
            <button type="button" className="ml-1 text-xs opacity-70 hover:opacity-100" aria-label={`Remove ${u.name}`} onClick={() => onRemove(u)}>
              ✕
            </button>
          </AttachmentChip>
        </li>
      ))}
    </ul>
  );
}

/** What `useUploads` gives: the pending uploads and what to do with them. */
export type Uploads = ReturnType<typeof useUploads>;
