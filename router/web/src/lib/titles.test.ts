import { describe, expect, it } from "vitest";
import { dateGroupLabel, groupByDate, TITLE_CHARS, titleFrom, UNTITLED } from "./titles";

describe("titleFrom", () => {
  it("takes the first line with words, without Markdown", () => {
    expect(titleFrom("  plan my\ttrip  \nand more")).toBe("plan my trip");
    expect(titleFrom("\n\n## **Lisbon** _trip_ ideas\n")).toBe("Lisbon trip ideas");
    expect(titleFrom("> - see [the docs](https://x.y/z) and ![a cat](c.png)")).toBe("see the docs and a cat");
    expect(titleFrom("```rust\nfn main_loop() {}\n```")).toBe("fn main_loop() {}");
    expect(titleFrom("1. `snake_case` names")).toBe("snake_case names");
  });

  it("is Untitled only when no words are left", () => {
    expect(titleFrom(" \n ")).toBe(UNTITLED);
    expect(titleFrom("**  **")).toBe(UNTITLED);
    expect(titleFrom("0")).toBe("0");
  });

  it("cuts long lines at a word, within the limit", () => {
    const long = titleFrom("word ".repeat(100));
    expect(Array.from(long).length).toBeLessThanOrEqual(TITLE_CHARS);
    expect(long).toBe(Array(12).fill("word").join(" ") + "…");
    expect(titleFrom(`${"a".repeat(55)} abcdefghij`)).toBe("a".repeat(55) + "…");
    const oneWord = titleFrom("x".repeat(100));
    expect(Array.from(oneWord).length).toBe(TITLE_CHARS);
    expect(titleFrom("é".repeat(TITLE_CHARS))).toBe("é".repeat(TITLE_CHARS));
  });
});

describe("date groups", () => {
  // Sunday 6 December 2026, 10:00 local time.
  const now = new Date(2026, 11, 6, 10, 0);
  const at = (days: number, hour = 9) => new Date(2026, 11, 6 - days, hour, 0);

  it("labels by calendar day, then by month", () => {
    expect(dateGroupLabel(at(0, 0), now)).toBe("Today");
    expect(dateGroupLabel(new Date(2026, 11, 6, 23, 0), now)).toBe("Today");
    expect(dateGroupLabel(at(1, 23), now)).toBe("Yesterday");
    expect(dateGroupLabel(at(1, 0), now)).toBe("Yesterday");
    expect(dateGroupLabel(at(2), now)).toBe("Previous 7 days");
    expect(dateGroupLabel(at(7), now)).toBe("Previous 7 days");
    expect(dateGroupLabel(at(8), now)).toBe("Previous 30 days");
    expect(dateGroupLabel(at(30), now)).toBe("Previous 30 days");
    expect(dateGroupLabel(new Date(2026, 9, 20), now)).toBe("October");
    expect(dateGroupLabel(new Date(2025, 11, 20), now)).toBe("December 2025");
  });

  it("keeps the list's order and groups items together", () => {
    const items = [at(0), at(0, 1), at(1), at(3), new Date(2026, 9, 2), new Date(2026, 8, 2)].map((d, i) => ({
      id: String(i),
      updated_at: d.toISOString(),
    }));
    const groups = groupByDate(items, now);
    expect(groups.map((g) => [g.label, g.items.map((i) => i.id)])).toEqual([
      ["Today", ["0", "1"]],
      ["Yesterday", ["2"]],
      ["Previous 7 days", ["3"]],
      ["October", ["4"]],
      ["September", ["5"]],
    ]);
  });
});
