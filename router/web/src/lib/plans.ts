// The plans (`GET /api/plans`, public) and how the landing page, sign-up and the
// Account page word them.

export type Tier = "free" | "pro" | "enterprise";

export interface PlanLimits {
  model: boolean;
  requests_per_minute: number;
  monthly_tokens: number | null;
  max_concurrent_turns: number;
  voice: boolean;
  storage_bytes: number | null;
}

export interface Plan {
  tier: Tier;
  /** US cents a month; null is on request. */
  price_cents: number | null;
  /** Whether checkout can sell it on this server now. */
  purchasable: boolean;
  limits: PlanLimits;
}

export interface PlansView {
  /** Whether this server takes payments. */
  billing: boolean;
  currency: string;
  plans: Plan[];
}

/** `GET /api/plans` (no account needed). */
export async function fetchPlans(fetchFn: typeof fetch = (i, init) => fetch(i, init)): Promise<PlansView> {
  const res = await fetchFn("/api/plans");
  if (!res.ok) throw new Error(`the plans could not be loaded (${res.status})`);
  return (await res.json()) as PlansView;
}

export const TIERS: Tier[] = ["free", "pro", "enterprise"];

export function isTier(v: string | null | undefined): v is Tier {
  return !!v && (TIERS as string[]).includes(v);
}

export function planName(tier: string): string {
  return tier.charAt(0).toUpperCase() + tier.slice(1);
}

/** "$0", "$20", "$12.34" a month, or "On request". */
export function formatPrice(cents: number | null, currency = "usd"): string {
  if (cents == null) return "On request";
  return new Intl.NumberFormat("en-US", {
    style: "currency",
    currency: currency.toUpperCase(),
    minimumFractionDigits: cents % 100 === 0 ? 0 : 2,
  }).format(cents / 100);
}

/** Money from micro-dollars (usage costs): "$0.0081" below a cent, else "$1.23". */
export function formatMicros(micros: number, currency = "usd"): string {
  const dollars = micros / 1_000_000;
  return new Intl.NumberFormat("en-US", {
    style: "currency",
    currency: currency.toUpperCase(),
    minimumFractionDigits: 2,
    maximumFractionDigits: dollars > 0 && dollars < 0.01 ? 4 : 2,
  }).format(dollars);
}

/** Bytes as people read them: "1 GB", "50 GB", "3.2 MB". Binary units, short names. */
export function formatBytes(bytes: number): string {
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  const digits = i === 0 || v >= 10 || Number.isInteger(v) ? 0 : 1;
  return `${v.toFixed(digits)} ${units[i]}`;
}

/** "1M", "20M", "1.5M", "500K", "900". */
export function formatTokens(n: number): string {
  if (n >= 1_000_000) return `${trim(n / 1_000_000)}M`;
  if (n >= 1_000) return `${trim(n / 1_000)}K`;
  return String(n);
}

function trim(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(1).replace(/\.0$/, "");
}

/** What a plan includes, one line each, from its limits. */
export function planFeatures(plan: Plan): string[] {
  const l = plan.limits;
  return [
    l.model ? "The agent: writes, runs code, answers" : "The agent needs a paid plan here",
    l.monthly_tokens == null ? "Unlimited tokens" : `${formatTokens(l.monthly_tokens)} tokens a month`,
    l.storage_bytes == null ? "Unlimited storage" : `${formatBytes(l.storage_bytes)} of storage`,
    `${l.max_concurrent_turns} ${l.max_concurrent_turns === 1 ? "answer" : "answers"} at a time`,
    `${l.requests_per_minute} model requests a minute`,
    l.voice ? "Spoken answers" : "Text answers only",
  ];
}

/** Why a paid plan cannot be bought here, or null when it can. */
export function unavailableReason(plan: Plan, billing: boolean): string | null {
  if (plan.tier === "free" || plan.purchasable) return null;
  if (!billing) return "Not available: this server does not take payments";
  return "Not for sale here: ask the operator";
}
