import { describe, expect, it } from "vitest";
import { formatBytes, formatMicros, formatPrice, formatTokens, planFeatures, unavailableReason, type Plan } from "./plans";
import { checkPassword } from "./passwordStrength";

const plan = (over: Partial<Plan> = {}): Plan => ({
  tier: "pro",
  price_cents: 2000,
  purchasable: true,
  limits: { model: true, requests_per_minute: 60, monthly_tokens: 20_000_000, max_concurrent_turns: 2, voice: true, storage_bytes: 50 * 1024 ** 3 },
  ...over,
});

describe("plans", () => {
  it("words prices, money, bytes and tokens as people read them", () => {
    expect(formatPrice(0)).toBe("$0");
    expect(formatPrice(2000)).toBe("$20");
    expect(formatPrice(1234)).toBe("$12.34");
    expect(formatPrice(null)).toBe("On request");
    expect(formatMicros(8100)).toBe("$0.0081");
    expect(formatMicros(1_230_000)).toBe("$1.23");
    expect(formatMicros(0)).toBe("$0.00");
    expect(formatBytes(1024 ** 3)).toBe("1 GB");
    expect(formatBytes(3.25 * 1024 ** 2)).toBe("3.3 MB");
    expect(formatBytes(512)).toBe("512 bytes");
    expect(formatTokens(1_000_000)).toBe("1M");
    expect(formatTokens(1_500_000)).toBe("1.5M");
  });

  it("lists what a plan includes from its limits", () => {
    const f = planFeatures(plan());
    expect(f).toContain("20M tokens a month");
    expect(f).toContain("50 GB of storage");
    expect(f).toContain("2 answers at a time");
    expect(planFeatures(plan({ limits: { ...plan().limits, monthly_tokens: null, storage_bytes: null } }))).toEqual(
      expect.arrayContaining(["Unlimited tokens", "Unlimited storage"]),
    );
  });

  it("says up front why a paid plan cannot be bought", () => {
    expect(unavailableReason(plan(), true)).toBeNull();
    expect(unavailableReason(plan({ purchasable: false }), false)).toMatch(/does not take payments/);
    expect(unavailableReason(plan({ purchasable: false }), true)).toMatch(/Not for sale/);
    expect(unavailableReason(plan({ tier: "free", purchasable: false }), false)).toBeNull();
  });
});

describe("password strength", () => {
  it("refuses what the server refuses and explains why", () => {
    const weak = checkPassword("1234567890");
    expect(weak.ok).toBe(false);
    expect(weak.warning).toMatch(/common/);
    expect(checkPassword("correct-horse-battery").ok).toBe(true);
    expect(checkPassword("ada.lovelace1815", "ada.lovelace1815@example.com").ok).toBe(false);
  });
});
