import { render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { fakeApi, json, session, withServices } from "../test/helpers";
import { FilesPage } from "./FilesPage";

const file = (id: string, path: string, content_type: string) => ({
  id,
  filename: path.split("/").pop()!,
  path,
  size: 1234,
  content_type,
  kind: "upload",
  created_at: "2026-01-01T00:00:00Z",
  updated_at: "2026-01-01T00:00:00Z",
});

describe("FilesPage", () => {
  const { createObjectURL, revokeObjectURL } = URL;
  afterEach(() => {
    URL.createObjectURL = createObjectURL;
    URL.revokeObjectURL = revokeObjectURL;
  });

  it("shows whole names (the full path in the tooltip) and image thumbnails fetched with the session", async () => {
    const long = "uploads/quarterly-report-final-version-with-appendix-2026.csv";
    const { api, calls } = fakeApi((c) => {
      if (c.url === "/api/auth/login") return json(session());
      if (c.url.startsWith("/api/files?")) return json({ files: [file("f1", long, "text/csv"), file("f2", "uploads/cat.png", "image/png")] });
      if (c.url === "/api/files/f2/download") return new Response(new Blob([new Uint8Array([137, 80, 78, 71])], { type: "image/png" }));
      return json({ error: { code: "not_found", message: "no" } }, 404);
    });
    await api.login("a@example.com", "pw");
    URL.createObjectURL = vi.fn(() => "blob:thumb");
    URL.revokeObjectURL = vi.fn();
    const { container } = render(withServices(api, <FilesPage />));
    const name = await screen.findByTitle(long);
    expect(name).toHaveTextContent(long);
    const thumb = await screen.findByTestId("file-thumb");
    expect(thumb).toHaveAttribute("src", "blob:thumb");
    const download = calls.find((c) => c.url === "/api/files/f2/download");
    expect(download?.headers.get("authorization")).toBe("Bearer access1");
    // Only images get a thumbnail; the CSV keeps its icon.
    expect(container.querySelectorAll('[data-testid="file-thumb"]')).toHaveLength(1);
    expect(calls.some((c) => c.url === "/api/files/f1/download")).toBe(false);
  });
});
