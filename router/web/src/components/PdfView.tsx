// A PDF's pages, drawn by PDF.js (pdfjs-dist) into canvases, with each page's
// text for screen readers. Loaded only when a PDF is opened (a lazy chunk); the
// parser runs in PDF.js's worker, served by the router like the app's scripts.

import { getDocument, GlobalWorkerOptions, type PDFDocumentProxy } from "pdfjs-dist";
import workerUrl from "pdfjs-dist/build/pdf.worker.min.mjs?url";
import { useEffect, useRef, useState } from "react";
import { ErrorBox } from "./ui";

GlobalWorkerOptions.workerSrc = workerUrl;

/** Pages drawn at most (a longer PDF says how many more there are). */
export const MAX_PAGES = 30;

export default function PdfView({ data, filename }: { data: Blob; filename: string }) {
  const [doc, setDoc] = useState<PDFDocumentProxy | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let cancelled = false;
    let destroy: (() => Promise<void>) | null = null;
    data
      .arrayBuffer()
      .then((buffer) => {
        if (cancelled) return null;
        // No eval and no WebAssembly: the router's Content-Security-Policy allows neither.
        const task = getDocument({ data: new Uint8Array(buffer), isEvalSupported: false, useWasm: false });
        destroy = () => task.destroy();
        return task.promise;
      })
      .then((d) => {
        if (!cancelled && d) setDoc(d);
      })
      .catch((e: unknown) => {
        if (!cancelled) setError(`This PDF could not be shown (${e instanceof Error ? e.message : String(e)}). Download it to open it.`);
      });
    return () => {
      cancelled = true;
      void destroy?.();
    };
  }, [data]);

  if (error) return <ErrorBox>{error}</ErrorBox>;
  if (!doc) return <p className="text-sm text-slate-500 dark:text-slate-400">Opening the PDF…</p>;
  const shown = Math.min(doc.numPages, MAX_PAGES);
  return (
    <section className="space-y-3" data-testid="pdf-view" aria-label={`${filename}, ${doc.numPages} page${doc.numPages === 1 ? "" : "s"}`}>
      <p className="text-xs text-slate-500 dark:text-slate-400">
        {doc.numPages} page{doc.numPages === 1 ? "" : "s"}
        {shown < doc.numPages ? `, the first ${shown} shown: download it for the rest` : ""}
      </p>
      {Array.from({ length: shown }, (_, i) => (
        <PdfPage key={i} doc={doc} n={i + 1} of={doc.numPages} />
      ))}
    </section>
  );
}

/** One page, as wide as the pane, sharp on high-density screens. */
function PdfPage({ doc, n, of }: { doc: PDFDocumentProxy; n: number; of: number }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const [text, setText] = useState("");
  const [drawn, setDrawn] = useState(false);
  useEffect(() => {
    let cancelled = false;
    let cancelRender: (() => void) | null = null;
    void (async () => {
      const page = await doc.getPage(n);
      const el = canvas.current;
      if (cancelled || !el) return;
      const width = el.parentElement?.clientWidth || 600;
      const base = page.getViewport({ scale: 1 });
      const ratio = window.devicePixelRatio || 1;
      const viewport = page.getViewport({ scale: (width / base.width) * ratio });
      el.width = Math.floor(viewport.width);
      el.height = Math.floor(viewport.height);
      el.style.aspectRatio = `${base.width} / ${base.height}`;
      const task = page.render({ canvas: el, viewport });
      cancelRender = () => task.cancel();
      await task.promise;
      if (cancelled) return;
      setDrawn(true);
      const content = await page.getTextContent();
      if (!cancelled) setText(content.items.map((item) => ("str" in item ? item.str : "")).join(" ").replace(/\s+/g, " ").trim());
    })().catch(() => {
      /* a page that fails stays blank; the others are drawn */
    });
    return () => {
      cancelled = true;
      cancelRender?.();
    };
  }, [doc, n]);
  return (
    <figure className="m-0">
      <canvas
        ref={canvas}
        className="block w-full rounded border border-slate-200 bg-white dark:border-slate-700"
        data-testid="pdf-page"
        data-drawn={drawn ? "true" : undefined}
        role="img"
        aria-label={`Page ${n} of ${of}`}
      />
      <figcaption className="sr-only">{text ? `Page ${n}: ${text}` : `Page ${n}`}</figcaption>
    </figure>
  );
}
