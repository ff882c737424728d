import { useEffect, useId, useState } from "react";
import { Link, useLocation, useNavigate, useSearchParams } from "react-router";
import { PasswordMeter } from "../components/PasswordMeter";
import { PlanPicker } from "../components/PlanPicker";
import { Button, ErrorBox, errorText, inputClass } from "../components/ui";
import { useApi } from "../context";
import { fetchPlans, isTier, planName, unavailableReason, type PlansView, type Tier } from "../lib/plans";

export function AuthPage({ mode }: { mode: "signin" | "signup" }) {
  const api = useApi();
  const navigate = useNavigate();
  const location = useLocation();
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const emailId = useId();
  const pwId = useId();
  const signup = mode === "signup";
  const notice = (location.state as { notice?: string } | null)?.notice;
  const [params] = useSearchParams();
  const asked = params.get("plan");
  const [plans, setPlans] = useState<PlansView | null>(null);
  const [plan, setPlan] = useState<Tier>(isTier(asked) ? asked : "free");

  // Sign-up offers the plans; one this server cannot sell falls back to free (its
  // radio says why).
  useEffect(() => {
    if (!signup) return;
    let live = true;
    fetchPlans()
      .then((p) => {
        if (!live) return;
        setPlans(p);
        setPlan((cur) => {
          const chosen = p.plans.find((x) => x.tier === cur);
          return chosen && !unavailableReason(chosen, p.billing) ? cur : "free";
        });
      })
      .catch(() => setPlans(null));
    return () => {
      live = false;
    };
  }, [signup]);
  const askedUnavailable = plans && isTier(asked) && asked !== plan ? plans.plans.find((x) => x.tier === asked) : undefined;

  async function submit(e: React.FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      if (signup) {
        await api.register(email, password);
        // The account exists now; a paid plan is bought at Stripe Checkout. (The
        // signed-in app may already show the chat meanwhile: this goes on.)
        if (plan !== "free") {
          try {
            const r = await api.json<{ url?: string }>("POST", "/api/billing/checkout", { plan });
            if (!r?.url) throw new Error("the billing service gave no address to go to");
            window.location.assign(r.url);
          } catch (err) {
            navigate("/account", {
              replace: true,
              state: { notice: `Your account is ready on the Free plan, but checkout for ${planName(plan)} failed: ${errorText(err)}. Try the upgrade below.` },
            });
          }
          return;
        }
      } else await api.login(email, password);
      const from = (location.state as { from?: string } | null)?.from;
      navigate(from && from !== "/signin" && from !== "/signup" ? from : "/chat", { replace: true });
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="flex min-h-full items-center justify-center p-4">
      <form onSubmit={submit} className="w-full max-w-sm space-y-4 rounded-xl border border-slate-200 p-6 shadow-sm dark:border-slate-800" aria-labelledby="auth-title">
        <div>
          <Link to="/" className="text-sm font-semibold tracking-wide text-blue-600">JARVIS</Link>
          <h1 id="auth-title" className="text-xl font-semibold">
            {signup ? "Create your account" : "Sign in"}
          </h1>
        </div>
        {notice && !error ? <p className="rounded-md bg-slate-100 px-3 py-2 text-sm dark:bg-slate-900">{notice}</p> : null}
        <div>
          <label htmlFor={emailId} className="mb-1 block text-sm font-medium">Email</label>
          <input id={emailId} type="email" autoComplete="email" required className={inputClass} value={email} onChange={(e) => setEmail(e.target.value)} />
        </div>
        <div>
          <label htmlFor={pwId} className="mb-1 block text-sm font-medium">Password</label>
          <input
            id={pwId}
            type="password"
            autoComplete={signup ? "new-password" : "current-password"}
            required
            minLength={signup ? 10 : undefined}
            aria-describedby={signup ? `${pwId}-meter` : undefined}
            className={inputClass}
            value={password}
            onChange={(e) => setPassword(e.target.value)}
          />
          {signup ? <PasswordMeter id={`${pwId}-meter`} password={password} email={email} /> : null}
        </div>
        {signup && plans ? <PlanPicker plans={plans} value={plan} onChange={setPlan} /> : null}
        {askedUnavailable ? (
          <p role="status" className="rounded-md bg-slate-100 px-3 py-2 text-sm dark:bg-slate-900" data-testid="plan-fallback">
            {planName(askedUnavailable.tier)} cannot be bought here ({unavailableReason(askedUnavailable, plans?.billing ?? false)?.replace(/^Not available: /, "")}); you start on Free.
          </p>
        ) : null}
        {error ? <ErrorBox>{error}</ErrorBox> : null}
        <Button type="submit" variant="primary" className="w-full" disabled={busy}>
          {busy ? "Please wait…" : signup ? (plan === "free" ? "Sign up" : `Sign up and pay for ${planName(plan)}`) : "Sign in"}
        </Button>
        <p className="text-center text-sm">
          {signup ? "Have an account? " : "New here? "}
          <Link className="text-blue-600 underline dark:text-blue-400" to={signup ? "/signin" : "/signup"}>
            {signup ? "Sign in" : "Create an account"}
          </Link>
        </p>
      </form>
    </main>
  );
}
