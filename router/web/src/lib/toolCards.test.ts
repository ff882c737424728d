import { describe, expect, it } from "vitest";
import { describeTool, humanize, languageOf, toolTitle } from "./toolCards";

const title = (name: string, input: unknown, state?: "running" | "done" | "failed") => toolTitle(describeTool(name, input, state));

describe("tool cards", () => {
  it("names the tools people see in words", () => {
    expect(title("mcp__jarvis__save_document", { filename: "plan.md", content: "# Plan" })).toBe("Saved document “plan.md”");
    expect(title("mcp__jarvis__save_document", { filename: "plan.md" }, "running")).toBe("Saving document “plan.md”");
    expect(title("Bash", { command: "ls -la\necho hi", description: "list" })).toBe("Ran ls -la");
    expect(title("Read", { file_path: "/workspace/uploads/sales.csv" })).toBe("Read uploads/sales.csv");
    expect(title("Read", { file_path: "/etc/hosts" }, "failed")).toBe("Could not read /etc/hosts");
    expect(title("Grep", { pattern: "TODO", path: "src" })).toBe("Searched for TODO");
    expect(title("Glob", { pattern: "**/*.rs" })).toBe("Found files **/*.rs");
    expect(title("WebFetch", { url: "https://example.com", prompt: "summary" })).toBe("Fetched https://example.com");
    expect(title("WebSearch", { query: "rust axum" })).toBe("Searched the web for “rust axum”");
    expect(title("TodoWrite", { todos: [] })).toBe("Updated the to-do list");
  });

  it("names unknown and MCP tools from their name and first telling input", () => {
    expect(title("mcp__github__create_issue", { title: "Bug" })).toBe("Create issue “Bug”");
    expect(title("SomeNewTool", { file_path: "/workspace/a.txt" })).toBe("Some new tool a.txt");
    expect(title("SomeNewTool", 42)).toBe("Some new tool");
  });

  it("shows the inputs as readable fields, without what the title shows", () => {
    const c = describeTool("Bash", { command: "make test", description: "Run the tests", timeout: 60000 });
    expect(c.fields).toEqual([
      { label: "Description", value: "Run the tests", mono: false, block: false },
      { label: "Timeout", value: "60000" },
    ]);
    // A multi-line command is shown whole below its first line.
    const m = describeTool("Bash", { command: "cd src\nmake" });
    expect(m.fields.map((f) => f.label)).toEqual(["Command"]);
    expect(m.fields[0]).toMatchObject({ value: "cd src\nmake", mono: true, block: true });
  });

  it("gives a Write its file and content, an Edit its file and changes", () => {
    const w = describeTool("Write", { file_path: "/workspace/app.py", content: "print(1)\n" });
    expect(w.write).toEqual({ path: "app.py", content: "print(1)\n" });
    expect(w.fields).toEqual([]);
    const e = describeTool("Edit", { file_path: "/workspace/app.py", old_string: "a", new_string: "b", replace_all: false });
    expect(e.edits).toEqual({ path: "app.py", edits: [{ oldText: "a", newText: "b" }] });
    expect(e.fields).toEqual([]);
    expect(describeTool("Edit", { file_path: "a", old_string: "a", new_string: "b", replace_all: true }).fields).toEqual([{ label: "Replace all", value: "true" }]);
    const me = describeTool("MultiEdit", { file_path: "x.ts", edits: [{ old_string: "1", new_string: "2" }, { old_string: "3", new_string: "4" }] });
    expect(me.edits?.edits).toHaveLength(2);
  });

  it("lists to-dos with their state", () => {
    const c = describeTool("TodoWrite", {
      todos: [
        { content: "Plan", status: "completed" },
        { content: "Build", status: "in_progress" },
        { content: "Ship", status: "pending" },
      ],
    });
    expect(c.fields).toEqual([{ label: "To-dos", value: "✓ Plan\n→ Build\n○ Ship", block: true }]);
  });

  it("humanizes keys and finds languages from extensions", () => {
    expect(humanize("file_path")).toBe("File path");
    expect(humanize("replaceAll")).toBe("Replace all");
    expect(languageOf("src/main.rs")).toBe("rust");
    expect(languageOf("a/b/App.tsx")).toBe("typescript");
    expect(languageOf("Dockerfile")).toBe("dockerfile");
    expect(languageOf("notes")).toBe("");
  });
});
