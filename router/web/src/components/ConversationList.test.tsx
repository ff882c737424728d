import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import type { ConversationSummary } from "../lib/types";
import { fakeApi, json, session, withServices } from "../test/helpers";
import { ConversationList } from "./ConversationList";

const ago = (days: number) => new Date(Date.now() - days * 24 * 3600 * 1000).toISOString();
const conv = (id: string, title: string, days: number): ConversationSummary => ({
  id,
  title,
  created_at: ago(days),
  updated_at: ago(days),
});

describe("ConversationList", () => {
  it("groups by last activity and searches on the server", async () => {
    const f = fakeApi((c) =>
      c.url === "/api/auth/login" ? json(session()) : json({ conversations: [conv("2", "Soup recipe", 3)], next_offset: null }),
    );
    await f.api.login("a@example.com", "password123");
    const convs = [conv("1", "Garden notes", 0), conv("2", "Soup recipe", 3), conv("3", "Old project", 400)];
    render(
      withServices(
        f.api,
        <ConversationList convs={convs} error={null} activeId="1" open onClose={() => {}} onNew={() => {}} onRename={async () => {}} onDelete={async () => {}} />,
      ),
    );
    const today = screen.getByRole("region", { name: "Today" });
    expect(within(today).getByRole("link", { name: "Garden notes" })).toHaveAttribute("aria-current", "page");
    expect(within(screen.getByRole("region", { name: "Previous 7 days" })).getByRole("link")).toHaveTextContent("Soup recipe");
    expect(screen.getAllByTestId("conversation-group")).toHaveLength(3);

    await userEvent.type(screen.getByLabelText("Search conversations"), "pome 50%");
    await screen.findByText("1 conversation found");
    expect(screen.getAllByRole("link").map((l) => l.textContent)).toEqual(["Soup recipe"]);
    const search = f.calls.find((c) => c.url.includes("q="))!;
    expect(search.url).toBe("/api/conversations?limit=100&q=pome%2050%25");
    await userEvent.clear(screen.getByLabelText("Search conversations"));
    await waitFor(() => expect(screen.getAllByRole("link")).toHaveLength(3));
  });
});
