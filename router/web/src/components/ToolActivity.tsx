import { useEffect, useId, useMemo, useState } from "react";
import { resultText, type Part } from "../lib/stream";
import { describeTool, languageOf, toolTitle, type ToolCard, type ToolField, type ToolState } from "../lib/toolCards";
import { LazyMarkdown } from "./LazyMarkdown";

type ToolPart = Extract<Part, { kind: "tool" }>;

/** A fenced Markdown block of `code`, highlighted as the language of `path`. */
function fenced(code: string, path: string): string {
  const longest = (code.match(/`{3,}/g) ?? []).reduce((m, s) => Math.max(m, s.length), 0);
  const fence = "`".repeat(Math.max(3, longest + 1));
  return `${fence}${languageOf(path)}\n${code}\n${fence}`;
}

const lineCount = (s: string) => (s === "" ? 0 : s.replace(/\n$/, "").split("\n").length);

function Field({ f }: { f: ToolField }) {
  const value = f.mono ? "font-mono text-xs" : "";
  return f.block ? (
    <div>
      <dt className="text-xs font-semibold text-slate-600 dark:text-slate-400">{f.label}</dt>
      <dd className={`mt-0.5 max-h-48 overflow-auto whitespace-pre-wrap break-words rounded bg-white p-1.5 text-xs dark:bg-slate-950 ${value}`}>{f.value}</dd>
    </div>
  ) : (
    <div className="flex min-w-0 gap-2">
      <dt className="shrink-0 text-xs font-semibold leading-5 text-slate-600 dark:text-slate-400">{f.label}</dt>
      <dd className={`min-w-0 break-words ${value}`}>{f.value}</dd>
    </div>
  );
}

/** A Write: the file's content, collapsed, highlighted by its extension. */
function WriteView({ path, content }: { path: string; content: string }) {
  const [open, setOpen] = useState(false);
  const id = useId();
  const n = lineCount(content);
  return (
    <div>
      <button
        type="button"
        aria-expanded={open}
        aria-controls={id}
        onClick={() => setOpen(!open)}
        className="inline-flex items-center gap-1 rounded text-xs font-semibold text-slate-600 hover:underline max-sm:min-h-11 dark:text-slate-400"
      >
        <span aria-hidden>{open ? "▾" : "▸"}</span>
        {open ? "Hide" : "Show"} the content of {path.split("/").pop()} ({n} line{n === 1 ? "" : "s"})
      </button>
      {open ? (
        <div id={id} className="max-h-80 overflow-auto text-xs" data-testid="tool-write-content">
          <LazyMarkdown text={fenced(content, path)} />
        </div>
      ) : null}
    </div>
  );
}

type Change = { value: string; added?: boolean; removed?: boolean };

/** An Edit: old → new as a line diff, added and removed lines marked with + and −. */
function DiffView({ edits }: { edits: { oldText: string; newText: string }[] }) {
  const [diffs, setDiffs] = useState<Change[][] | null>(null);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    let live = true;
    // The diff library loads only when an edit is opened.
    import("diff")
      .then((m) => live && setDiffs(edits.map((e) => m.diffLines(e.oldText, e.newText))))
      .catch(() => live && setFailed(true));
    return () => {
      live = false;
    };
  }, [edits]);
  if (failed) return <p className="text-xs text-red-700 dark:text-red-300">The diff could not be shown.</p>;
  if (!diffs) return <p className="text-xs text-slate-600 dark:text-slate-400">Loading the changes…</p>;
  let added = 0;
  let removed = 0;
  for (const d of diffs)
    for (const c of d) {
      if (c.added) added += lineCount(c.value);
      if (c.removed) removed += lineCount(c.value);
    }
  return (
    <div data-testid="tool-diff">
      <p className="text-xs text-slate-600 dark:text-slate-400">
        <span className="text-emerald-800 dark:text-emerald-300">+{added}</span>{" "}
        <span className="text-red-800 dark:text-red-300">−{removed}</span>
        <span className="sr-only">
          {" "}({added} line{added === 1 ? "" : "s"} added, {removed} removed)
        </span>
      </p>
      {diffs.map((d, i) => (
        <pre key={i} className="diff mt-1 max-h-72 overflow-auto rounded border border-slate-200 bg-white py-1 font-mono text-xs dark:border-slate-700 dark:bg-slate-950">
          {d.flatMap((c, j) =>
            c.value
              .replace(/\n$/, "")
              .split("\n")
              .map((line, k) => {
                const key = `${j}-${k}`;
                if (c.added)
                  return (
                    <ins key={key} className="px-1.5">
                      <span aria-hidden>+ </span>
                      <span className="sr-only">added: </span>
                      {line}
                    </ins>
                  );
                if (c.removed)
                  return (
                    <del key={key} className="px-1.5">
                      <span aria-hidden>− </span>
                      <span className="sr-only">removed: </span>
                      {line}
                    </del>
                  );
                return (
                  <span key={key} className="block px-1.5 text-slate-700 dark:text-slate-300">
                    {"  "}
                    {line}
                  </span>
                );
              }),
          )}
        </pre>
      ))}
    </div>
  );
}

const PREVIEW_LINES = 6;

/** The tool's result: the first lines, the rest behind "Show all". */
function ResultView({ text, isError }: { text: string; isError: boolean }) {
  const [all, setAll] = useState(false);
  const lines = text.split("\n");
  const long = lines.length > PREVIEW_LINES || text.length > 600;
  const shown = all || !long ? text : lines.slice(0, PREVIEW_LINES).join("\n").slice(0, 600) + "\n…";
  return (
    <div>
      <div className={`text-xs font-semibold ${isError ? "text-red-700 dark:text-red-300" : "text-slate-600 dark:text-slate-400"}`}>
        {isError ? "Error" : "Result"}
      </div>
      <pre
        className={`mt-0.5 max-h-72 overflow-auto whitespace-pre-wrap break-words rounded p-1.5 font-mono text-xs ${isError ? "bg-red-50 text-red-900 dark:bg-red-950 dark:text-red-100" : "bg-white dark:bg-slate-950"}`}
        data-testid="tool-result"
      >
        {shown || "(no output)"}
      </pre>
      {long ? (
        <button type="button" onClick={() => setAll(!all)} className="rounded text-xs font-semibold text-blue-700 hover:underline max-sm:min-h-11 dark:text-blue-300">
          {all ? "Show less" : `Show all (${lines.length} lines)`}
        </button>
      ) : null}
    </div>
  );
}

function Title({ card }: { card: ToolCard }) {
  return (
    <span className="flex min-w-0 flex-1 items-baseline gap-1.5" title={toolTitle(card)}>
      <span className="shrink-0 font-medium">{card.verb}</span>{" "}
      {card.subject ? (
        <span className={`min-w-0 truncate ${card.mono ? "font-mono text-xs" : ""} text-slate-700 dark:text-slate-300`}>
          {card.quoted ? `“${card.subject}”` : card.subject}
        </span>
      ) : null}
    </span>
  );
}

/** One tool call: a compact line (what it did, what it touched, state) that expands to
 * readable inputs (a Write's content, an Edit's diff) and the result. */
export function ToolActivity({ part }: { part: ToolPart }) {
  const [open, setOpen] = useState(false);
  const id = useId();
  const state: ToolState = !part.result ? "running" : part.result.isError ? "failed" : "done";
  const card = useMemo(() => describeTool(part.name, part.input, state), [part.name, part.input, state]);
  const badge =
    state === "running"
      ? "text-amber-800 dark:text-amber-300"
      : state === "failed"
        ? "text-red-700 dark:text-red-300"
        : "text-emerald-800 dark:text-emerald-300";
  return (
    <div
      className={`my-1 rounded-md border text-sm ${state === "failed" ? "border-red-300 bg-red-50/50 dark:border-red-900 dark:bg-red-950/40" : "border-slate-200 bg-slate-50 dark:border-slate-800 dark:bg-slate-900"}`}
      data-testid="tool"
      data-tool={part.name}
    >
      <button
        type="button"
        aria-expanded={open}
        aria-controls={id}
        onClick={() => setOpen(!open)}
        className="flex w-full min-w-0 items-center gap-2 px-2 py-1 text-left max-sm:min-h-11"
      >
        <span aria-hidden className="text-slate-500 dark:text-slate-400">{open ? "▾" : "▸"}</span>
        <Title card={card} />{" "}
        <span className={`shrink-0 text-xs ${badge}`}>
          {state === "failed" ? <span aria-hidden>✕ </span> : null}
          {state}
        </span>
      </button>
      {open ? (
        <div id={id} className="space-y-2 border-t border-slate-200 px-2 py-2 dark:border-slate-800">
          {card.edits ? <DiffView edits={card.edits.edits} /> : null}
          {card.write ? <WriteView path={card.write.path} content={card.write.content} /> : null}
          {card.fields.length > 0 ? (
            <dl className="space-y-1 text-sm">
              {card.fields.map((f) => (
                <Field key={f.label} f={f} />
              ))}
            </dl>
          ) : null}
          {part.result ? <ResultView text={resultText(part.result.content)} isError={part.result.isError} /> : null}
        </div>
      ) : null}
    </div>
  );
}
