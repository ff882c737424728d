import { act, render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import type { ConnectionEvent } from "../lib/connection";
import { EgressPrompts } from "../lib/egressPrompts";
import type { ServerFrame } from "../lib/types";
import { EgressPrompt } from "./EgressPrompt";

function harness() {
  let emit: (e: ConnectionEvent) => void = () => {};
  const decideEgress = vi.fn();
  const prompts = new EgressPrompts({
    subscribe: (f) => {
      emit = f;
      return () => {};
    },
    decideEgress,
  });
  const push = (frame: ServerFrame) => act(() => emit({ kind: "frame", frame }));
  render(<EgressPrompt prompts={prompts} />);
  return { push, decideEgress };
}

const ask = (id: string): ServerFrame => ({
  type: "egress_request",
  id,
  host: "example.org",
  port: 8443,
  expires_in_ms: 60_000,
});

describe("EgressPrompt", () => {
  it("asks about the host and port with labelled buttons, focused on Allow once", async () => {
    const { push, decideEgress } = harness();
    expect(screen.queryByTestId("egress-prompt")).toBeNull();
    push(ask("q1"));
    const dialog = screen.getByRole("alertdialog", { name: /the agent wants to reach example\.org:8443/i });
    expect(dialog).toBeInTheDocument();
    const once = screen.getByRole("button", { name: "Allow example.org:8443 once" });
    expect(once).toHaveFocus();
    expect(screen.getByRole("button", { name: /always allow example\.org/i })).toBeInTheDocument();
    await userEvent.click(once);
    expect(decideEgress).toHaveBeenCalledWith("q1", "once");
    expect(screen.queryByRole("alertdialog")).toBeNull();
  });

  it("Always allow and Deny send their answers", async () => {
    const { push, decideEgress } = harness();
    push(ask("q1"));
    await userEvent.click(screen.getByRole("button", { name: /always allow/i }));
    push(ask("q2"));
    await userEvent.click(screen.getByRole("button", { name: "Deny example.org:8443" }));
    expect(decideEgress.mock.calls).toEqual([
      ["q1", "always"],
      ["q2", "deny"],
    ]);
  });

  it("Escape denies", async () => {
    const { push, decideEgress } = harness();
    push(ask("q1"));
    await userEvent.keyboard("{Escape}");
    expect(decideEgress).toHaveBeenCalledWith("q1", "deny");
    expect(screen.queryByRole("alertdialog")).toBeNull();
  });

  it("goes when another tab answered", () => {
    const { push, decideEgress } = harness();
    push(ask("q1"));
    push({ type: "egress_resolved", id: "q1", decision: "always" });
    expect(screen.queryByRole("alertdialog")).toBeNull();
    expect(decideEgress).not.toHaveBeenCalled();
  });
});
