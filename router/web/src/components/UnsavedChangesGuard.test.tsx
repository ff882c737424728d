import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { createMemoryRouter, Link, RouterProvider } from "react-router";
import { afterEach, describe, expect, it, vi } from "vitest";
import { DISCARD_QUESTION } from "../lib/pane";
import { UnsavedChangesGuard } from "./UnsavedChangesGuard";

function app(dirty: boolean) {
  const router = createMemoryRouter(
    [
      {
        path: "/edit",
        element: (
          <>
            <UnsavedChangesGuard dirty={dirty} />
            <Link to="/elsewhere">Leave</Link>
          </>
        ),
      },
      { path: "/elsewhere", element: <p>Elsewhere</p> },
    ],
    { initialEntries: ["/edit"] },
  );
  render(<RouterProvider router={router} />);
  return router;
}

describe("UnsavedChangesGuard", () => {
  afterEach(() => vi.restoreAllMocks());

  it("asks before leaving with unsaved edits, and stays when told no", async () => {
    const confirm = vi.spyOn(window, "confirm").mockReturnValue(false);
    const router = app(true);
    await userEvent.click(screen.getByRole("link", { name: "Leave" }));
    expect(confirm).toHaveBeenCalledWith(DISCARD_QUESTION);
    expect(router.state.location.pathname).toBe("/edit");
    confirm.mockReturnValue(true);
    await userEvent.click(screen.getByRole("link", { name: "Leave" }));
    await screen.findByText("Elsewhere");
  });

  it("lets a page without edits go, and guards the tab while dirty", async () => {
    const confirm = vi.spyOn(window, "confirm");
    app(false);
    const unload = new Event("beforeunload", { cancelable: true });
    window.dispatchEvent(unload);
    expect(unload.defaultPrevented).toBe(false);
    await userEvent.click(screen.getByRole("link", { name: "Leave" }));
    await screen.findByText("Elsewhere");
    expect(confirm).not.toHaveBeenCalled();
  });

  it("cancels the tab's unload while dirty", () => {
    vi.spyOn(window, "confirm").mockReturnValue(false);
    app(true);
    const unload = new Event("beforeunload", { cancelable: true });
    window.dispatchEvent(unload);
    expect(unload.defaultPrevented).toBe(true);
  });
});
