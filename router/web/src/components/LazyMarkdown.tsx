import { lazy, Suspense } from "react";

// The Markdown renderer and highlighter load after the first paint.
const Markdown = lazy(() => import("./Markdown"));

export function LazyMarkdown({ text }: { text: string }) {
  return (
    <Suspense fallback={<div className="whitespace-pre-wrap">{text}</div>}>
      <Markdown text={text} />
    </Suspense>
  );
}

/** A code file, highlighted, as a fenced block. */
export function CodeView({ code, filename }: { code: string; filename: string }) {
  const ext = filename.includes(".") ? filename.split(".").pop()!.toLowerCase() : "";
  const fence = "```" + "`".repeat(Math.max(0, (code.match(/`{3,}/g) ?? []).reduce((m, s) => Math.max(m, s.length - 2), 0)));
  return <LazyMarkdown text={`${fence}${ext}\n${code}\n${fence}`} />;
}
