// What a tool call card says: a friendly title instead of the raw tool name
// (`mcp__jarvis__save_document` → Saved document “plan.md”), and the input as
// readable fields instead of raw JSON. Pure functions, so they are unit-tested.

export type ToolState = "running" | "done" | "failed";

/** One readable input field: a label and its value as text. */
export interface ToolField {
  label: string;
  value: string;
  /** Code-like (commands, paths, patterns): shown in a monospace font. */
  mono?: boolean;
  /** Several lines: shown as a block, not inline. */
  block?: boolean;
}

export interface ToolCard {
  /** What happened, in words: "Read", "Saved document", "Ran". */
  verb: string;
  /** What it touched: a path, a command, a pattern (may be empty). */
  subject: string;
  /** The subject is code-like (a command, a path): monospace. */
  mono: boolean;
  /** The subject is a name to quote (“plan.md”). */
  quoted: boolean;
  /** The input fields not already shown in the title or a special view. */
  fields: ToolField[];
  /** A Write (file and content) or an Edit (file and a diff) get their own views. */
  write?: { path: string; content: string };
  edits?: { path: string; edits: { oldText: string; newText: string }[] };
}

type Obj = Record<string, unknown>;

const str = (o: Obj, k: string): string | undefined => (typeof o[k] === "string" ? (o[k] as string) : undefined);

/** The first line of `s`, at most `max` characters. */
export function firstLine(s: string, max = 120): string {
  const line = s.trim().split("\n")[0];
  return line.length > max ? line.slice(0, max - 1) + "…" : line;
}

/** `file_path` → "File path", `saveDocument` → "Save document". */
export function humanize(key: string): string {
  const words = key
    .replace(/([a-z0-9])([A-Z])/g, "$1 $2")
    .replace(/[_-]+/g, " ")
    .trim()
    .toLowerCase();
  return words ? words.charAt(0).toUpperCase() + words.slice(1) : key;
}

/** A path shown short: workspace paths relative to the workspace. */
export function shortPath(p: string): string {
  return p.replace(/^\/workspace\//, "");
}

// Verbs by state: [running, done, failed].
type Verbs = [string, string, string];

function pick(v: Verbs, state: ToolState): string {
  return state === "running" ? v[0] : state === "failed" ? v[2] : v[1];
}

interface Spec {
  verbs: Verbs;
  /** The input key the title shows (and the fields leave out). */
  key?: string;
  mono?: boolean;
  quoted?: boolean;
  path?: boolean;
}

const SPECS: Record<string, Spec> = {
  Bash: { verbs: ["Running", "Ran", "Failed to run"], key: "command", mono: true },
  BashOutput: { verbs: ["Reading output of", "Read output of", "Could not read output of"], key: "bash_id", mono: true },
  KillShell: { verbs: ["Stopping", "Stopped", "Could not stop"], key: "shell_id", mono: true },
  Read: { verbs: ["Reading", "Read", "Could not read"], key: "file_path", mono: true, path: true },
  Write: { verbs: ["Writing", "Wrote", "Could not write"], key: "file_path", mono: true, path: true },
  Edit: { verbs: ["Editing", "Edited", "Could not edit"], key: "file_path", mono: true, path: true },
  MultiEdit: { verbs: ["Editing", "Edited", "Could not edit"], key: "file_path", mono: true, path: true },
  NotebookEdit: { verbs: ["Editing notebook", "Edited notebook", "Could not edit notebook"], key: "notebook_path", mono: true, path: true },
  Grep: { verbs: ["Searching for", "Searched for", "Search failed for"], key: "pattern", mono: true },
  Glob: { verbs: ["Finding files", "Found files", "Could not find files"], key: "pattern", mono: true },
  LS: { verbs: ["Listing", "Listed", "Could not list"], key: "path", mono: true, path: true },
  WebFetch: { verbs: ["Fetching", "Fetched", "Could not fetch"], key: "url", mono: true },
  WebSearch: { verbs: ["Searching the web for", "Searched the web for", "Web search failed for"], key: "query", quoted: true },
  TodoWrite: { verbs: ["Updating the to-do list", "Updated the to-do list", "Could not update the to-do list"] },
  Task: { verbs: ["Running a sub-task:", "Ran a sub-task:", "Sub-task failed:"], key: "description" },
  Agent: { verbs: ["Running a sub-task:", "Ran a sub-task:", "Sub-task failed:"], key: "description" },
  mcp__jarvis__save_document: { verbs: ["Saving document", "Saved document", "Could not save document"], key: "filename", quoted: true },
  mcp__jarvis__list_documents: { verbs: ["Listing documents", "Listed documents", "Could not list documents"] },
  mcp__jarvis__read_document: { verbs: ["Reading document", "Read document", "Could not read document"], key: "filename", quoted: true },
};

/** A tool without a spec: `mcp__server__do_thing` → "Do thing" (state in the badge). */
function genericVerb(name: string): string {
  const m = /^mcp__(.+?)__(.+)$/.exec(name);
  return humanize(m ? m[2] : name);
}

function fieldOf(key: string, v: unknown): ToolField | null {
  if (v === undefined || v === null || v === "") return null;
  // Flags left at their default say nothing.
  if (v === false && /^replace_?all$/i.test(key)) return null;
  const label = humanize(key);
  if (typeof v === "string") {
    const block = v.includes("\n") || v.length > 80;
    const mono = /path|command|pattern|glob|url|regex|id$/i.test(key);
    return { label, value: v, mono, block };
  }
  if (typeof v === "number" || typeof v === "boolean") return { label, value: String(v) };
  if (Array.isArray(v) && v.every((x) => typeof x === "string")) return { label, value: v.join(", ") };
  return { label, value: JSON.stringify(v, null, 2), mono: true, block: true };
}

/** To-do items as lines: "✓ Done thing", "→ Current thing", "○ Next thing". */
function todoLines(todos: unknown): string | null {
  if (!Array.isArray(todos)) return null;
  const mark = (s: unknown) => (s === "completed" ? "✓" : s === "in_progress" ? "→" : "○");
  return todos
    .map((t) => (t && typeof t === "object" ? `${mark((t as Obj).status)} ${String((t as Obj).content ?? "")}` : String(t)))
    .join("\n");
}

/** The card for one tool call in a given state. */
export function describeTool(name: string, input: unknown, state: ToolState = "done"): ToolCard {
  const spec = SPECS[name];
  const o: Obj = input && typeof input === "object" && !Array.isArray(input) ? (input as Obj) : {};
  const card: ToolCard = {
    verb: spec ? pick(spec.verbs, state) : genericVerb(name),
    subject: "",
    mono: !!spec?.mono,
    quoted: !!spec?.quoted,
    fields: [],
  };
  const skip = new Set<string>();
  if (spec?.key && str(o, spec.key) !== undefined) {
    const v = str(o, spec.key)!;
    card.subject = spec.path ? shortPath(v) : firstLine(v);
    // A command longer than the title still shows in full below.
    if (!(spec.key === "command" && v.trim() !== card.subject)) skip.add(spec.key);
  } else if (!spec) {
    // Unknown tools: the first telling input as the subject.
    for (const k of ["file_path", "path", "filename", "command", "pattern", "query", "url", "name", "title"]) {
      const v = str(o, k);
      if (v) {
        card.subject = firstLine(k.includes("path") ? shortPath(v) : v);
        card.mono = /path|command|pattern|url/.test(k);
        card.quoted = !card.mono;
        skip.add(k);
        break;
      }
    }
  }
  if (typeof input === "string" && !card.subject) card.subject = firstLine(input);

  if (name === "Write" && str(o, "file_path") !== undefined) {
    card.write = { path: shortPath(str(o, "file_path")!), content: str(o, "content") ?? "" };
    skip.add("content");
  }
  if ((name === "Edit" || name === "MultiEdit") && str(o, "file_path") !== undefined) {
    const raw = name === "Edit" ? [o] : Array.isArray(o.edits) ? (o.edits as unknown[]) : [];
    const edits = raw
      .filter((e): e is Obj => !!e && typeof e === "object")
      .map((e) => ({ oldText: str(e, "old_string") ?? "", newText: str(e, "new_string") ?? "" }));
    card.edits = { path: shortPath(str(o, "file_path")!), edits };
    for (const k of ["old_string", "new_string", "edits"]) skip.add(k);
  }
  if (name === "TodoWrite") {
    const lines = todoLines(o.todos);
    if (lines !== null) {
      card.fields.push({ label: "To-dos", value: lines, block: true });
      skip.add("todos");
    }
  }
  if (name === "mcp__jarvis__save_document" && typeof o.content === "string") {
    card.fields.push({ label: "Content", value: o.content, block: true });
    skip.add("content");
  }
  for (const [k, v] of Object.entries(o)) {
    if (skip.has(k)) continue;
    const f = fieldOf(k, v);
    if (f) card.fields.push(f);
  }
  return card;
}

/** The card's title as one line of text (for tooltips and tests). */
export function toolTitle(card: ToolCard): string {
  if (!card.subject) return card.verb;
  return `${card.verb} ${card.quoted ? `“${card.subject}”` : card.subject}`;
}

/** The language a file's extension names, for highlighting (`main.rs` → `rust`). */
export function languageOf(path: string): string {
  const base = path.split("/").pop() ?? "";
  if (/^dockerfile$/i.test(base)) return "dockerfile";
  if (/^makefile$/i.test(base)) return "makefile";
  const ext = base.includes(".") ? base.split(".").pop()!.toLowerCase() : "";
  const map: Record<string, string> = {
    js: "javascript", mjs: "javascript", cjs: "javascript", jsx: "javascript",
    ts: "typescript", tsx: "typescript", py: "python", rs: "rust", rb: "ruby",
    sh: "bash", bash: "bash", zsh: "bash", yml: "yaml", yaml: "yaml", md: "markdown",
    htm: "xml", html: "xml", svg: "xml", kt: "kotlin", cs: "csharp", h: "c", hpp: "cpp", cc: "cpp",
    txt: "plaintext", csv: "plaintext",
  };
  return map[ext] ?? ext;
}
