import { useEffect, useId, useState } from "react";
import { Button, ErrorBox, errorText, PageTitle } from "../components/ui";
import { useServices } from "../context";
import { ApiError } from "../lib/api";
import { setTheme, useTheme, type Theme } from "../lib/settings";
import type { User } from "../lib/types";

interface Usage {
  [k: string]: unknown;
  input_tokens?: number;
  output_tokens?: number;
  limit_tokens?: number | null;
  token_limit?: number | null;
}

const billingOffCodes = ["billing_off", "billing_disabled", "not_found"];

export function AccountPage() {
  const { api } = useServices();
  const [me, setMe] = useState<User | null>(null);
  const [usage, setUsage] = useState<Usage | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [billingOff, setBillingOff] = useState(false);
  const [billingError, setBillingError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const { theme } = useTheme();
  const [voiceError, setVoiceError] = useState<string | null>(null);
  const themeId = useId();
  const voiceId = useId();

  useEffect(() => {
    api.get<User>("/api/me").then(setMe).catch((e) => setError(errorText(e)));
    // Usage is shown only when the router answers it.
    api.get<Usage>("/api/usage").then(setUsage).catch(() => setUsage(null));
  }, [api]);

  async function billing(kind: "checkout" | "portal") {
    setBusy(true);
    setBillingError(null);
    try {
      const r = await api.json<{ url?: string }>("POST", `/api/billing/${kind}`, {});
      if (r?.url) window.location.assign(r.url);
      else setBillingError("The billing service gave no address to go to.");
    } catch (e) {
      if (e instanceof ApiError && ([404, 403, 501].includes(e.status) || billingOffCodes.includes(e.code))) setBillingOff(true);
      else setBillingError(errorText(e));
    } finally {
      setBusy(false);
    }
  }

  const num = (v: unknown) => (typeof v === "number" ? v.toLocaleString() : "—");
  const limit = usage ? (usage.limit_tokens ?? usage.token_limit) : null;

  return (
    <main className="mx-auto max-w-2xl space-y-6 overflow-y-auto p-4">
      <PageTitle>Account</PageTitle>
      {error ? <ErrorBox>{error}</ErrorBox> : null}
      <section aria-labelledby="plan-h" className="rounded-lg border border-slate-200 p-4 dark:border-slate-800">
        <h2 id="plan-h" className="mb-2 font-semibold">Plan</h2>
        {me ? (
          <dl className="grid grid-cols-[8rem_1fr] gap-y-1 text-sm">
            <dt className="text-slate-600 dark:text-slate-400">Email</dt>
            <dd className="truncate" data-testid="account-email">{me.email}</dd>
            <dt className="text-slate-600 dark:text-slate-400">Plan</dt>
            <dd className="capitalize" data-testid="account-tier">{me.tier}</dd>
            <dt className="text-slate-600 dark:text-slate-400">Subscription</dt>
            <dd>{me.subscription_active ? "Active" : "Inactive — renew to keep using Jarvis"}</dd>
          </dl>
        ) : !error ? (
          <p className="text-sm text-slate-500">Loading…</p>
        ) : null}
        <div className="mt-4 flex flex-wrap gap-2">
          <Button variant="primary" disabled={busy || billingOff} onClick={() => billing("checkout")}>
            Upgrade plan
          </Button>
          <Button disabled={busy || billingOff} onClick={() => billing("portal")}>
            Manage billing
          </Button>
        </div>
        {billingOff ? (
          <p className="mt-2 text-sm text-slate-600 dark:text-slate-400" role="status" data-testid="billing-off">
            Billing off: this server does not take payments, and every account is active.
          </p>
        ) : null}
        {billingError ? <div className="mt-2"><ErrorBox>{billingError}</ErrorBox></div> : null}
      </section>
      {usage ? (
        <section aria-labelledby="usage-h" className="rounded-lg border border-slate-200 p-4 dark:border-slate-800">
          <h2 id="usage-h" className="mb-2 font-semibold">Usage this month</h2>
          <dl className="grid grid-cols-[8rem_1fr] gap-y-1 text-sm">
            <dt className="text-slate-600 dark:text-slate-400">Input tokens</dt>
            <dd>{num(usage.input_tokens)}</dd>
            <dt className="text-slate-600 dark:text-slate-400">Output tokens</dt>
            <dd>{num(usage.output_tokens)}</dd>
            {limit != null ? (
              <>
                <dt className="text-slate-600 dark:text-slate-400">Limit</dt>
                <dd>{num(limit)} tokens</dd>
              </>
            ) : null}
          </dl>
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
          <p className="text-xs text-slate-500">Spoken answers are not part of your plan.</p>
        ) : null}
        {voiceError ? <ErrorBox>{voiceError}</ErrorBox> : null}
      </section>
    </main>
  );
}
