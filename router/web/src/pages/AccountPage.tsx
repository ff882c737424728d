import { useEffect, useId, useState } from "react";
import { useLocation, useSearchParams } from "react-router";
import { UsageBar } from "../components/UsageBar";
import { Button, ErrorBox, errorText, PageTitle } from "../components/ui";
import { useServices } from "../context";
import { ApiError } from "../lib/api";
import { setTheme, useTheme, type Theme } from "../lib/settings";
import {
  fetchPlans,
  formatBytes,
  formatMicros,
  formatPrice,
  isTier,
  planFeatures,
  planName,
  unavailableReason,
  type PlansView,
  type Tier,
} from "../lib/plans";
import type { User } from "../lib/types";

interface Usage {
  month: string;
  input_tokens: number;
  output_tokens: number;
  cost_micros: number;
  limit_tokens: number | null;
  plan: Tier;
  billing: boolean;
  subscription_active: boolean;
  subscription_status: string | null;
  storage_used?: number;
  storage_quota?: number | null;
  price_cents?: number | null;
}

const rank: Record<Tier, number> = { free: 0, pro: 1, enterprise: 2 };

export function AccountPage() {
  const { api } = useServices();
  const location = useLocation();
  const [params] = useSearchParams();
  const [me, setMe] = useState<User | null>(null);
  const [usage, setUsage] = useState<Usage | null>(null);
  const [plans, setPlans] = useState<PlansView | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [billingError, setBillingError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const { theme } = useTheme();
  const [voiceError, setVoiceError] = useState<string | null>(null);
  const themeId = useId();
  const voiceId = useId();
  const notice = (location.state as { notice?: string } | null)?.notice;
  const checkout = params.get("checkout");

  useEffect(() => {
    api.get<User>("/api/me").then(setMe).catch((e) => setError(errorText(e)));
    // Usage and the plans are shown only when the router answers them.
    api.get<Usage>("/api/usage").then(setUsage).catch(() => setUsage(null));
    fetchPlans().then(setPlans).catch(() => setPlans(null));
  }, [api]);

  // Known up front (from the plans or the usage), not after a click.
  const billingOn = plans?.billing ?? usage?.billing ?? null;
  const billingOff = billingOn === false;
  const tier: Tier = isTier(usage?.plan) ? usage.plan : isTier(me?.tier) ? me.tier : "free";
  const current = plans?.plans.find((p) => p.tier === tier);

  async function billing(kind: "checkout" | "portal", plan?: Tier) {
    setBusy(true);
    setBillingError(null);
    try {
      const r = await api.json<{ url?: string }>("POST", `/api/billing/${kind}`, kind === "checkout" ? { plan } : {});
      if (r?.url) {
        window.location.assign(r.url);
        return;
      }
      setBillingError("The billing service gave no address to go to.");
    } catch (e) {
      if (e instanceof ApiError && e.code === "billing_off") setBillingError("Billing off: this server does not take payments, and every account is active.");
      else setBillingError(errorText(e));
    }
    setBusy(false);
  }

  return (
    <main className="mx-auto max-w-2xl space-y-6 overflow-y-auto p-4">
      <PageTitle>Account</PageTitle>
      {error ? <ErrorBox>{error}</ErrorBox> : null}
      {notice ? <p role="status" className="rounded-md bg-slate-100 px-3 py-2 text-sm dark:bg-slate-900">{notice}</p> : null}
      {checkout === "success" ? (
        <p role="status" className="rounded-md bg-green-50 px-3 py-2 text-sm text-green-800 dark:bg-green-950 dark:text-green-200" data-testid="checkout-success">
          Thank you: your payment went through. Your new plan shows here as soon as Stripe confirms it.
        </p>
      ) : checkout === "cancel" ? (
        <p role="status" className="rounded-md bg-slate-100 px-3 py-2 text-sm dark:bg-slate-900" data-testid="checkout-cancel">
          Checkout was cancelled; nothing was charged.
        </p>
      ) : null}
      <section aria-labelledby="plan-h" className="rounded-lg border border-slate-200 p-4 dark:border-slate-800">
        <h2 id="plan-h" className="mb-2 font-semibold">Plan</h2>
        {me ? (
          <dl className="grid grid-cols-[7rem_1fr] gap-y-1 text-sm sm:grid-cols-[8rem_1fr]">
            <dt className="text-slate-600 dark:text-slate-400">Email</dt>
            <dd className="truncate" data-testid="account-email">{me.email}</dd>
            <dt className="text-slate-600 dark:text-slate-400">Plan</dt>
            <dd>
              <span className="capitalize" data-testid="account-tier">{tier}</span>
              {current ? <span className="text-slate-600 dark:text-slate-400"> · {formatPrice(current.price_cents, plans?.currency)}{current.price_cents ? " / month" : ""}</span> : null}
            </dd>
            <dt className="text-slate-600 dark:text-slate-400">Subscription</dt>
            <dd>{me.subscription_active ? "Active" : "Inactive — renew to keep using Jarvis"}</dd>
          </dl>
        ) : !error ? (
          <p className="text-sm text-slate-500 dark:text-slate-400">Loading…</p>
        ) : null}
        {plans ? (
          <ul className="mt-4 space-y-2" aria-label="Other plans" data-testid="other-plans">
            {plans.plans
              .filter((p) => p.tier !== tier)
              .map((p) => {
                const reason = unavailableReason(p, plans.billing);
                const higher = rank[p.tier] > rank[tier];
                return (
                  <li key={p.tier} className="rounded-md border border-slate-200 px-3 py-2 text-sm dark:border-slate-800" data-testid={`plan-${p.tier}`}>
                    <div className="flex flex-wrap items-center gap-x-3 gap-y-2">
                      <span className="font-medium">{planName(p.tier)}</span>
                      <span className="text-slate-600 dark:text-slate-400">
                        {formatPrice(p.price_cents, plans.currency)}
                        {p.price_cents ? " / month" : ""}
                      </span>
                      <span className="ml-auto">
                        {higher ? (
                          <Button
                            variant="primary"
                            disabled={busy || !!reason}
                            aria-describedby={reason ? `why-${p.tier}` : undefined}
                            onClick={() => billing("checkout", p.tier)}
                          >
                            Upgrade to {planName(p.tier)}
                          </Button>
                        ) : (
                          <span className="text-xs text-slate-500 dark:text-slate-400">Change under Manage billing</span>
                        )}
                      </span>
                    </div>
                    <p className="mt-1 text-xs text-slate-500 dark:text-slate-400">{planFeatures(p).slice(1, 4).join(" · ")}</p>
                    {higher && reason ? (
                      <p id={`why-${p.tier}`} className="mt-1 text-xs text-slate-600 dark:text-slate-400">{reason}</p>
                    ) : null}
                  </li>
                );
              })}
          </ul>
        ) : null}
        <div className="mt-4 flex flex-wrap items-center gap-2">
          <Button disabled={busy || billingOff} aria-describedby={billingOff ? "billing-off" : undefined} onClick={() => billing("portal")}>
            Manage billing
          </Button>
          {busy ? <span className="text-sm text-slate-500 dark:text-slate-400" role="status">Opening Stripe…</span> : null}
        </div>
        {billingOff ? (
          <p id="billing-off" className="mt-2 text-sm text-slate-600 dark:text-slate-400" data-testid="billing-off">
            Billing off: this server does not take payments, and every account is active.
          </p>
        ) : null}
        {billingError ? <div className="mt-2"><ErrorBox>{billingError}</ErrorBox></div> : null}
      </section>
      {usage ? (
        <section aria-labelledby="usage-h" className="space-y-3 rounded-lg border border-slate-200 p-4 dark:border-slate-800" data-testid="usage">
          <h2 id="usage-h" className="font-semibold">Usage this month ({usage.month})</h2>
          <div className="flex justify-between gap-2 text-sm">
            <span className="text-slate-600 dark:text-slate-400">Model cost</span>
            <span data-testid="usage-cost">
              {formatMicros(usage.cost_micros)}
              {usage.price_cents ? ` (plan ${formatPrice(usage.price_cents)} / month)` : ""}
            </span>
          </div>
          <UsageBar
            label="Tokens"
            used={usage.input_tokens + usage.output_tokens}
            limit={usage.limit_tokens}
            format={(n) => n.toLocaleString("en-US")}
            testId="usage-tokens"
          />
          <p className="text-xs text-slate-600 dark:text-slate-400">
            {usage.input_tokens.toLocaleString("en-US")} in, {usage.output_tokens.toLocaleString("en-US")} out
          </p>
          {usage.storage_used != null ? (
            <UsageBar label="Storage" used={usage.storage_used} limit={usage.storage_quota ?? null} format={formatBytes} testId="usage-storage" />
          ) : null}
        </section>
      ) : null}
      <section aria-labelledby="prefs-h" className="space-y-3 rounded-lg border border-slate-200 p-4 dark:border-slate-800">
        <h2 id="prefs-h" className="font-semibold">Preferences</h2>
        <div className="flex items-center gap-3 text-sm">
          <label htmlFor={themeId} className="w-32">Theme</label>
          <select id={themeId} className="rounded-md border border-slate-300 bg-white px-2 py-1 dark:border-slate-700 dark:bg-slate-900" value={theme} onChange={(e) => setTheme(e.target.value as Theme)}>
            <option value="system">Same as the system</option>
            <option value="light">Light</option>
            <option value="dark">Dark</option>
          </select>
        </div>
        <div className="flex items-center gap-3 text-sm">
          <input
            id={voiceId}
            type="checkbox"
            className="h-4 w-4"
            checked={!!me?.voice_answers}
            disabled={!me || me.voice_available === false}
            onChange={async (e) => {
              setVoiceError(null);
              try {
                setMe(await api.json<User>("PATCH", "/api/me", { voice_answers: e.target.checked }));
              } catch (err) {
                setVoiceError(errorText(err));
              }
            }}
          />
          <label htmlFor={voiceId}>Speak answers aloud (saved to your account; the chat's voice button changes it per message)</label>
        </div>
        {me && me.voice_available === false ? (
          <p className="text-xs text-slate-600 dark:text-slate-400">Spoken answers are not part of your plan.</p>
        ) : null}
        {voiceError ? <ErrorBox>{voiceError}</ErrorBox> : null}
      </section>
    </main>
  );
}
