// Conversation titles from a first message (the router's `transcript::title`,
// mirrored so a new conversation is named before the list reloads), and the
// sidebar's date groups.

/** Longest generated title, in characters (ellipsis included). */
export const TITLE_CHARS = 60;
export const UNTITLED = "Untitled";

/** One line without Markdown marks (heading, quote, list, emphasis, code, links), whitespace collapsed. */
function plainLine(line: string): string {
  let rest = line.trim();
  for (;;) {
    const before = rest;
    rest = rest.replace(/^#+/, "").replace(/^>+/, "").trimStart();
    rest = rest.replace(/^(- \[[ x]\] |[-*+] )/, "").trimStart();
    rest = rest.replace(/^\d+[.)] /, "").trimStart();
    if (rest === before) break;
  }
  const out = rest
    .replace(/!\[/g, "[")
    .replace(/\]\([^)]*\)/g, "]")
    .replace(/[[\]*`~]/g, "")
    // `_` marks emphasis only at a word's edge (snake_case stays).
    .replace(/(^|[^\p{L}\p{N}])_+|_+(?=[^\p{L}\p{N}]|$)/gu, "$1");
  return out.split(/\s+/).filter(Boolean).join(" ");
}

/** The title of a conversation whose first message is `content`. */
export function titleFrom(content: string): string {
  const line =
    content
      .split(/\r?\n/)
      .filter((l) => !/^\s*(```|~~~)/.test(l))
      .map(plainLine)
      .find((l) => l.length > 0) ?? "";
  const chars = Array.from(line);
  if (chars.length <= TITLE_CHARS) return line || UNTITLED;
  const room = chars.slice(0, TITLE_CHARS - 1).join("");
  const whole = chars[TITLE_CHARS - 1] === " ";
  const space = room.lastIndexOf(" ");
  const cut = whole ? room : space > 0 ? room.slice(0, space) : room;
  return cut.replace(/[ ,;:.-]+$/, "") + "…";
}

export interface DateGroup<T> {
  label: string;
  items: T[];
}

const DAY = 24 * 60 * 60 * 1000;

/** Local midnight of `d`. */
function startOfDay(d: Date): number {
  return new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
}

/** The group a time of last activity falls in, seen at `now`: Today, Yesterday,
 * Previous 7 days, Previous 30 days, then the month ("March", or "March 2025"
 * when not this year). A time in the future counts as today. */
export function dateGroupLabel(at: Date, now: Date): string {
  const today = startOfDay(now);
  const t = at.getTime();
  if (t >= today) return "Today";
  if (t >= today - DAY) return "Yesterday";
  if (t >= today - 7 * DAY) return "Previous 7 days";
  if (t >= today - 30 * DAY) return "Previous 30 days";
  const month = at.toLocaleString("en-US", { month: "long" });
  return at.getFullYear() === now.getFullYear() ? month : `${month} ${at.getFullYear()}`;
}

/** `items` (newest first) in date groups by `updated_at`, in order. */
export function groupByDate<T extends { updated_at: string }>(items: T[], now = new Date()): DateGroup<T>[] {
  const groups: DateGroup<T>[] = [];
  for (const item of items) {
    const at = new Date(item.updated_at);
    const label = Number.isNaN(at.getTime()) ? "Older" : dateGroupLabel(at, now);
    const last = groups[groups.length - 1];
    if (last && last.label === label) last.items.push(item);
    else {
      const same = groups.find((g) => g.label === label);
      if (same) same.items.push(item);
      else groups.push({ label, items: [item] });
    }
  }
  return groups;
}
