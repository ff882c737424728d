import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import { fakeApi, json, session, withServices } from "../test/helpers";
import { SidePane, usePane } from "./SidePane";

// PDF.js itself needs a real canvas and worker (the e2e run draws real pages):
// here a stand-in with the same API answers for a two-page PDF.
const pdfjs = vi.hoisted(() => ({
  opened: [] as { bytes: string; isEvalSupported?: boolean }[],
  rendered: [] as number[],
}));
vi.mock("pdfjs-dist/build/pdf.worker.min.mjs?url", () => ({ default: "/assets/pdf.worker.js" }));
vi.mock("pdfjs-dist", () => ({
  GlobalWorkerOptions: {},
  getDocument: ({ data, isEvalSupported }: { data: Uint8Array; isEvalSupported?: boolean }) => {
    pdfjs.opened.push({ bytes: new TextDecoder().decode(data), isEvalSupported });
    const doc = {
      numPages: 2,
      getPage: async (n: number) => ({
        getViewport: ({ scale }: { scale: number }) => ({ width: 612 * scale, height: 792 * scale }),
        render: () => {
          pdfjs.rendered.push(n);
          return { promise: Promise.resolve(), cancel: () => {} };
        },
        getTextContent: async () => ({ items: [{ str: `Text of page ${n}` }] }),
      }),
    };
    return { promise: Promise.resolve(doc), destroy: async () => {} };
  },
}));

function Harness() {
  const pane = usePane(() => true);
  return (
    <>
      <button onClick={() => pane.open({ kind: "file", id: "f1", filename: "report.pdf" })}>open pdf</button>
      <SidePane pane={pane} />
    </>
  );
}

describe("SidePane: a PDF", () => {
  it("shows the pages of a PDF, with their text for screen readers", async () => {
    const f = fakeApi((c) => {
      if (c.url === "/api/auth/login") return json(session());
      if (c.url === "/api/files/f1/download") return new Response("%PDF-1.4 fake", { headers: { "content-type": "application/pdf" } });
      return json({ error: { code: "not_found", message: "not found" } }, 404);
    });
    await f.api.login("a@example.com", "password123");
    render(withServices(f.api, <Harness />));
    await userEvent.click(screen.getByRole("button", { name: "open pdf" }));
    const pages = await screen.findAllByRole("img", { name: /^Page \d of 2$/ }, { timeout: 10_000 });
    expect(pages.map((p) => p.getAttribute("aria-label"))).toEqual(["Page 1 of 2", "Page 2 of 2"]);
    expect(screen.getByRole("region", { name: "report.pdf, 2 pages" })).toBeInTheDocument();
    expect(await screen.findByText("Page 2: Text of page 2")).toBeInTheDocument();
    // The file's bytes went to PDF.js, with no eval (the CSP forbids it).
    expect(pdfjs.opened).toEqual([{ bytes: "%PDF-1.4 fake", isEvalSupported: false }]);
    expect(pdfjs.rendered.sort()).toEqual([1, 2]);
    expect(screen.queryByText(/not previewed/)).toBeNull();
    expect(screen.getByRole("button", { name: "Download" })).toBeInTheDocument();
  });
});
