import { useId, useState } from "react";
import { resultText, toolSummary, type Part } from "../lib/stream";

type ToolPart = Extract<Part, { kind: "tool" }>;

/** One tool call: a compact line (name, what it touched, state) that expands to input and result. */
export function ToolActivity({ part }: { part: ToolPart }) {
  const [open, setOpen] = useState(false);
  const id = useId();
  const state = !part.result ? "running" : part.result.isError ? "failed" : "done";
  const badge =
    state === "running"
      ? "text-amber-700 dark:text-amber-300"
      : state === "failed"
        ? "text-red-700 dark:text-red-300"
        : "text-emerald-700 dark:text-emerald-300";
  return (
    <div className="my-1 rounded-md border border-slate-200 bg-slate-50 text-sm dark:border-slate-800 dark:bg-slate-900" data-testid="tool">
      <button
        type="button"
        aria-expanded={open}
        aria-controls={id}
        onClick={() => setOpen(!open)}
        className="flex w-full items-center gap-2 px-2 py-1 text-left"
      >
        <span aria-hidden className="text-slate-400">{open ? "▾" : "▸"}</span>
        <span className="font-mono font-semibold">{part.name}</span>
        <span className="min-w-0 flex-1 truncate font-mono text-slate-600 dark:text-slate-400">
          {toolSummary(part.name, part.input)}
        </span>
        <span className={`text-xs ${badge}`}>{state}</span>
      </button>
      {open ? (
        <div id={id} className="space-y-2 border-t border-slate-200 px-2 py-2 dark:border-slate-800">
          <div>
            <div className="text-xs font-semibold uppercase text-slate-500">Input</div>
            <pre className="max-h-64 overflow-auto whitespace-pre-wrap font-mono text-xs">
              {typeof part.input === "string" ? part.input : JSON.stringify(part.input, null, 2)}
            </pre>
          </div>
          {part.result ? (
            <div>
              <div className="text-xs font-semibold uppercase text-slate-500">
                {part.result.isError ? "Error" : "Result"}
              </div>
              <pre className="max-h-64 overflow-auto whitespace-pre-wrap font-mono text-xs">
                {resultText(part.result.content)}
              </pre>
            </div>
          ) : null}
        </div>
      ) : null}
    </div>
  );
}
