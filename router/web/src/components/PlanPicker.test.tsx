import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import type { PlansView } from "../lib/plans";
import { PlanPicker } from "./PlanPicker";

const limits = { model: true, requests_per_minute: 20, monthly_tokens: 1, max_concurrent_turns: 1, voice: true, storage_bytes: 1 };
const view = (billing: boolean): PlansView => ({
  billing,
  currency: "usd",
  plans: [
    { tier: "free", price_cents: 0, purchasable: false, limits },
    { tier: "pro", price_cents: 2000, purchasable: billing, limits },
    { tier: "enterprise", price_cents: null, purchasable: false, limits },
  ],
});

describe("PlanPicker", () => {
  it("lets a buyable plan be chosen", async () => {
    const onChange = vi.fn();
    render(<PlanPicker plans={view(true)} value="free" onChange={onChange} />);
    expect(screen.getByRole("radio", { name: /Free/ })).toBeChecked();
    await userEvent.click(screen.getByRole("radio", { name: /Pro/ }));
    expect(onChange).toHaveBeenCalledWith("pro");
    expect(screen.getByRole("radio", { name: /Enterprise/ })).toBeDisabled();
  });

  it("with billing off, disables the paid plans and says why", () => {
    render(<PlanPicker plans={view(false)} value="free" onChange={() => {}} />);
    expect(screen.getByRole("radio", { name: /Pro/ })).toBeDisabled();
    expect(screen.getByTestId("plan-unavailable-pro")).toHaveTextContent("does not take payments");
  });
});
