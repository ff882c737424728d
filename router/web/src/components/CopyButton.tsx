import { useEffect, useState } from "react";

/** Copies `text()` to the clipboard; says "Copied" (visibly and to screen readers) for a moment. */
export function CopyButton({
  text,
  label,
  className = "",
  compact = false,
}: {
  text: () => string;
  /** The accessible name: "Copy code", "Copy answer". */
  label: string;
  className?: string;
  /** Icon only (the name stays in aria-label). */
  compact?: boolean;
}) {
  const [state, setState] = useState<"idle" | "copied" | "failed">("idle");
  useEffect(() => {
    if (state === "idle") return;
    const t = setTimeout(() => setState("idle"), 2000);
    return () => clearTimeout(t);
  }, [state]);
  async function copy() {
    try {
      await navigator.clipboard.writeText(text());
      setState("copied");
    } catch {
      setState("failed");
    }
  }
  const shown = state === "copied" ? "Copied" : state === "failed" ? "Copy failed" : "Copy";
  return (
    <button
      type="button"
      onClick={() => void copy()}
      aria-label={label}
      title={label}
      className={`inline-flex items-center gap-1 rounded px-1.5 py-0.5 text-xs text-slate-600 hover:bg-slate-200 focus-visible:outline-2 max-sm:min-h-11 max-sm:min-w-11 max-sm:justify-center dark:text-slate-300 dark:hover:bg-slate-700 ${className}`}
    >
      {state === "copied" ? (
        <svg aria-hidden viewBox="0 0 16 16" className="h-3.5 w-3.5 fill-none stroke-current" strokeWidth="1.6" strokeLinecap="round" strokeLinejoin="round">
          <path d="M3 8.5l3 3 7-7" />
        </svg>
      ) : (
        <svg aria-hidden viewBox="0 0 16 16" className="h-3.5 w-3.5 fill-none stroke-current" strokeWidth="1.3" strokeLinejoin="round">
          <rect x="5.5" y="5.5" width="8" height="8" rx="1.5" />
          <path d="M10.5 3.5v-1a1 1 0 0 0-1-1h-6a1 1 0 0 0-1 1v6a1 1 0 0 0 1 1h1" />
        </svg>
      )}
      <span aria-hidden className={compact && state === "idle" ? "hidden" : ""}>
        {shown}
      </span>
      <span role="status" className="sr-only">
        {state === "copied" ? "Copied to the clipboard" : state === "failed" ? "Could not copy" : ""}
      </span>
    </button>
  );
}
