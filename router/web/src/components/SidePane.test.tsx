import { render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import { DISCARD_QUESTION, previewKind } from "../lib/pane";
import type { Doc } from "../lib/types";
import { fakeApi, json, session, withServices } from "../test/helpers";
import { SidePane, usePane } from "./SidePane";

const doc = (id: string, content: string): Doc => ({
  id,
  filename: `${id}.md`,
  type: "markdown",
  size: content.length,
  conversation_id: null,
  created_at: "2026-01-01T00:00:00Z",
  updated_at: "2026-01-01T00:00:00Z",
  content,
});

function Harness({ confirm }: { confirm: (q: string) => boolean }) {
  const pane = usePane(confirm);
  return (
    <>
      <button onClick={() => pane.open({ kind: "document", id: "a", filename: "a.md" })}>open a</button>
      <button onClick={() => pane.open({ kind: "document", id: "b", filename: "b.md" })}>open b</button>
      <SidePane pane={pane} />
    </>
  );
}

async function setup(confirm: (q: string) => boolean) {
  const f = fakeApi((c) => {
    if (c.url === "/api/auth/login") return json(session());
    if (c.method === "PUT") return json({ ...doc("a", ""), content: (c.body as { content: string }).content });
    if (c.url === "/api/documents/a") return json(doc("a", "# Alpha heading"));
    if (c.url === "/api/documents/b") return json(doc("b", "Beta body"));
    return json({ error: { code: "not_found", message: "not found" } }, 404);
  });
  await f.api.login("a@example.com", "password123");
  render(withServices(f.api, <Harness confirm={confirm} />));
  return f;
}

async function editA() {
  await userEvent.click(screen.getByRole("button", { name: "open a" }));
  await userEvent.click(await screen.findByRole("button", { name: "Edit" }));
  await userEvent.type(screen.getByLabelText("Content"), " more");
}

describe("SidePane", () => {
  it("shows a document rendered, closes without asking when nothing changed, and gives focus back", async () => {
    const confirm = vi.fn(() => false);
    await setup(confirm);
    await userEvent.click(screen.getByRole("button", { name: "open a" }));
    // Markdown rendered (once the lazy renderer loaded).
    await screen.findByRole("heading", { name: "Alpha heading" }, { timeout: 10_000 });
    await userEvent.click(screen.getByRole("button", { name: "Close pane" }));
    expect(confirm).not.toHaveBeenCalled();
    expect(screen.queryByTestId("side-pane")).toBeNull();
    // Focus goes back to what opened the pane.
    await waitFor(() => expect(screen.getByRole("button", { name: "open a" })).toHaveFocus());
  });

  it("asks before unsaved edits are dropped by closing, and keeps them when told no", async () => {
    const confirm = vi.fn(() => false);
    await setup(confirm);
    await editA();
    await userEvent.click(screen.getByRole("button", { name: "Close pane" }));
    expect(confirm).toHaveBeenCalledWith(DISCARD_QUESTION);
    expect(screen.getByLabelText("Content")).toHaveValue("# Alpha heading more");
    // Opening another document asks too.
    await userEvent.click(screen.getByRole("button", { name: "open b" }));
    expect(confirm).toHaveBeenCalledTimes(2);
    expect(screen.getByLabelText("Content")).toHaveValue("# Alpha heading more");
    // So does the editor's Cancel.
    await userEvent.click(screen.getByRole("button", { name: "Cancel" }));
    expect(confirm).toHaveBeenCalledTimes(3);
    expect(screen.getByLabelText("Content")).toBeInTheDocument();
  });

  it("drops the edits when the user agrees, and opens the other document", async () => {
    const confirm = vi.fn(() => true);
    await setup(confirm);
    await editA();
    await userEvent.click(screen.getByRole("button", { name: "open b" }));
    expect(confirm).toHaveBeenCalledTimes(1);
    await screen.findByText("Beta body");
    // Nothing unsaved any more: closing does not ask.
    await userEvent.click(screen.getByRole("button", { name: "Close pane" }));
    expect(confirm).toHaveBeenCalledTimes(1);
    expect(screen.queryByTestId("side-pane")).toBeNull();
  });

  it("saved edits need no question", async () => {
    const confirm = vi.fn(() => false);
    const { calls } = await setup(confirm);
    await editA();
    await userEvent.click(screen.getByRole("button", { name: "Save" }));
    await screen.findByText(/Alpha heading more/);
    expect(calls.some((c) => c.method === "PUT" && c.url === "/api/documents/a")).toBe(true);
    await userEvent.click(screen.getByRole("button", { name: "Close pane" }));
    expect(confirm).not.toHaveBeenCalled();
    await waitFor(() => expect(screen.queryByTestId("side-pane")).toBeNull());
  });
});

describe("previewKind", () => {
  it("previews by content type and name", () => {
    expect(previewKind("cat.PNG", "")).toBe("image");
    expect(previewKind("x", "image/webp")).toBe("image");
    expect(previewKind("r.pdf", "application/pdf")).toBe("pdf");
    expect(previewKind("notes.md", "text/plain")).toBe("markdown");
    expect(previewKind("main.rs", "application/octet-stream")).toBe("code");
    expect(previewKind("data.csv", "text/csv")).toBe("text");
    expect(previewKind("blob.bin", "application/octet-stream")).toBe("other");
  });
});
