import { useEffect, useState } from "react";
import { Link } from "react-router";
import { formatPrice, fetchPlans, planFeatures, planName, unavailableReason, type PlansView } from "../lib/plans";

const linkButton = "inline-flex items-center justify-center rounded-md px-4 py-2 text-sm font-medium focus-visible:outline-2";
const primary = `${linkButton} bg-blue-600 text-white hover:bg-blue-700`;
const secondary = `${linkButton} border border-slate-300 bg-white hover:bg-slate-50 dark:border-slate-700 dark:bg-slate-900 dark:hover:bg-slate-800`;

const points = [
  { title: "Its own workspace", text: "Each account gets a private computer in the cloud where Jarvis keeps files and runs code." },
  { title: "Writes and runs", text: "Documents, reports and programs: Jarvis writes them, runs them and shows you the result." },
  { title: "Text and voice", text: "Answers stream as text, and can be spoken aloud while they arrive." },
];

/** What signed-out visitors see at `/`: what Jarvis is, the plans, sign up / sign in. */
export function LandingPage() {
  const [plans, setPlans] = useState<PlansView | null>(null);
  const [error, setError] = useState(false);
  useEffect(() => {
    fetchPlans()
      .then(setPlans)
      .catch(() => setError(true));
  }, []);

  return (
    <div className="min-h-full">
      <header className="flex h-14 items-center gap-2 border-b border-slate-200 px-4 dark:border-slate-800">
        <span className="flex-1 font-semibold tracking-wide text-blue-600">JARVIS</span>
        <Link to="/signin" className="rounded-md px-3 py-1.5 text-sm font-medium hover:bg-slate-100 dark:hover:bg-slate-800">
          Sign in
        </Link>
        <Link to="/signup" className={`${primary} py-1.5`}>
          Sign up
        </Link>
      </header>
      <main>
        <section aria-labelledby="hero-h" className="mx-auto max-w-3xl px-4 py-12 text-center sm:py-20">
          <h1 id="hero-h" className="text-3xl font-bold tracking-tight sm:text-5xl">
            Your personal AI agent, with a computer of its own
          </h1>
          <p className="mx-auto mt-4 max-w-2xl text-base text-slate-600 sm:text-lg dark:text-slate-400">
            Jarvis writes documents and code, runs them in its own workspace, and answers in text and voice.
          </p>
          <div className="mt-8 flex flex-wrap justify-center gap-3">
            <Link to="/signup" className={primary}>
              Start free
            </Link>
            <Link to="/signin" className={secondary}>
              Sign in
            </Link>
          </div>
        </section>
        <section aria-label="What Jarvis does" className="mx-auto grid max-w-5xl gap-4 px-4 sm:grid-cols-3">
          {points.map((p) => (
            <div key={p.title} className="rounded-lg border border-slate-200 p-4 dark:border-slate-800">
              <h2 className="font-semibold">{p.title}</h2>
              <p className="mt-1 text-sm text-slate-600 dark:text-slate-400">{p.text}</p>
            </div>
          ))}
        </section>
        <section aria-labelledby="plans-h" className="mx-auto max-w-5xl px-4 py-12">
          <h2 id="plans-h" className="text-center text-2xl font-bold">
            Plans
          </h2>
          {plans && !plans.billing ? (
            <p className="mt-2 text-center text-sm text-slate-600 dark:text-slate-400" data-testid="landing-billing-off">
              This server does not take payments: accounts start on Free, and paid plans cannot be bought here.
            </p>
          ) : null}
          {error ? <p className="mt-4 text-center text-sm text-slate-500 dark:text-slate-400">The plans could not be loaded; sign up to start on Free.</p> : null}
          {!plans && !error ? <p className="mt-4 text-center text-sm text-slate-500 dark:text-slate-400">Loading plans…</p> : null}
          {plans ? (
            <ul className="mt-6 grid gap-4 sm:grid-cols-3" data-testid="landing-plans">
              {plans.plans.map((p) => {
                const reason = unavailableReason(p, plans.billing);
                return (
                  <li
                    key={p.tier}
                    data-testid={`landing-plan-${p.tier}`}
                    className={`flex flex-col rounded-lg border p-5 ${p.tier === "pro" ? "border-blue-500 shadow-sm" : "border-slate-200 dark:border-slate-800"}`}
                  >
                    <h3 className="text-lg font-semibold">{planName(p.tier)}</h3>
                    <p className="mt-1">
                      <span className="text-3xl font-bold" data-testid={`price-${p.tier}`}>
                        {formatPrice(p.price_cents, plans.currency)}
                      </span>
                      {p.price_cents ? <span className="text-sm text-slate-500 dark:text-slate-400"> / month</span> : null}
                    </p>
                    <ul className="mt-4 flex-1 space-y-1 text-sm">
                      {planFeatures(p).map((f) => (
                        <li key={f} className="flex gap-2">
                          <span aria-hidden className="text-blue-600">✓</span>
                          {f}
                        </li>
                      ))}
                    </ul>
                    {reason ? (
                      <p className="mt-4 rounded-md bg-slate-100 px-3 py-2 text-center text-sm text-slate-600 dark:bg-slate-900 dark:text-slate-400" data-testid={`landing-unavailable-${p.tier}`}>
                        {reason}
                      </p>
                    ) : (
                      <Link to={`/signup?plan=${p.tier}`} className={`mt-4 ${p.tier === "free" ? secondary : primary}`}>
                        {p.tier === "free" ? "Start free" : `Choose ${planName(p.tier)}`}
                      </Link>
                    )}
                  </li>
                );
              })}
            </ul>
          ) : null}
        </section>
      </main>
      <footer className="border-t border-slate-200 px-4 py-6 text-center text-xs text-slate-500 dark:text-slate-400 dark:border-slate-800">
        Jarvis — prices in US dollars, billed monthly through Stripe.
      </footer>
    </div>
  );
}
