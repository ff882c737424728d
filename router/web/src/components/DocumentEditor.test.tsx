import { render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import type { Doc } from "../lib/types";
import { fakeApi, json, session, withServices } from "../test/helpers";
import { DocumentEditor } from "./DocumentEditor";

const doc: Doc = {
  id: "d1",
  filename: "notes.md",
  type: "markdown",
  size: 5,
  conversation_id: null,
  created_at: "2026-01-01T00:00:00Z",
  updated_at: "2026-01-01T00:00:00Z",
  content: "hello",
};

async function signedIn(handler: Parameters<typeof fakeApi>[0]) {
  const f = fakeApi((c) => (c.url === "/api/auth/login" ? json(session()) : handler(c)));
  await f.api.login("a@example.com", "password123");
  return f;
}

describe("DocumentEditor", () => {
  it("edits and saves with PUT, then reports the saved document", async () => {
    const { api, calls } = await signedIn((c) =>
      json({ ...doc, content: (c.body as { content: string }).content }),
    );
    const onSaved = vi.fn();
    render(withServices(api, <DocumentEditor doc={doc} onSaved={onSaved} onCancel={() => {}} />));
    const save = screen.getByRole("button", { name: "Save" });
    expect(save).toBeDisabled();
    const area = screen.getByLabelText("Content");
    await userEvent.clear(area);
    await userEvent.type(area, "# New text");
    await userEvent.click(save);
    await waitFor(() => expect(onSaved).toHaveBeenCalled());
    const put = calls.find((c) => c.method === "PUT")!;
    expect(put.url).toBe("/api/documents/d1");
    expect(put.headers.get("authorization")).toBe("Bearer access1");
    expect(put.body).toEqual({ content: "# New text" });
    expect(onSaved.mock.calls[0][0].content).toBe("# New text");
  });

  it("shows the server's error and keeps the edit", async () => {
    const { api } = await signedIn(() =>
      json({ error: { code: "invalid_request", message: "a filename must be 1-255 bytes without slashes" } }, 422),
    );
    const onSaved = vi.fn();
    render(withServices(api, <DocumentEditor doc={doc} onSaved={onSaved} onCancel={() => {}} />));
    const name = screen.getByLabelText("File name");
    await userEvent.clear(name);
    await userEvent.type(name, "a/b.md");
    await userEvent.click(screen.getByRole("button", { name: "Save" }));
    expect(await screen.findByRole("alert")).toHaveTextContent(/Not saved: A filename must be 1-255 bytes/);
    expect(onSaved).not.toHaveBeenCalled();
    expect(screen.getByLabelText("File name")).toHaveValue("a/b.md");
  });

  it("saves with Ctrl+S", async () => {
    const { api, calls } = await signedIn(() => json(doc));
    render(withServices(api, <DocumentEditor doc={doc} onSaved={() => {}} onCancel={() => {}} />));
    await userEvent.type(screen.getByLabelText("Content"), "!{Control>}s{/Control}");
    await waitFor(() => expect(calls.some((c) => c.method === "PUT")).toBe(true));
  });
});
