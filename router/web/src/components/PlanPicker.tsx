import { useId } from "react";
import { formatPrice, planName, unavailableReason, type PlansView, type Tier } from "../lib/plans";

/** The plans as a radio group (sign-up); plans this server cannot sell are disabled, with why. */
export function PlanPicker({ plans, value, onChange }: { plans: PlansView; value: Tier; onChange: (t: Tier) => void }) {
  const name = useId();
  return (
    <fieldset className="space-y-2" data-testid="plan-picker">
      <legend className="mb-1 text-sm font-medium">Plan</legend>
      {plans.plans.map((p) => {
        const reason = unavailableReason(p, plans.billing);
        const id = `${name}-${p.tier}`;
        return (
          <label
            key={p.tier}
            htmlFor={id}
            className={`flex items-start gap-2 rounded-md border px-3 py-2 text-sm ${
              value === p.tier ? "border-blue-500 bg-blue-50 dark:bg-blue-950/40" : "border-slate-200 dark:border-slate-800"
            } ${reason ? "cursor-not-allowed opacity-70" : "cursor-pointer"}`}
          >
            <input
              id={id}
              type="radio"
              name={name}
              value={p.tier}
              className="mt-0.5 h-4 w-4"
              checked={value === p.tier}
              disabled={!!reason}
              aria-describedby={reason ? `${id}-why` : undefined}
              onChange={() => onChange(p.tier)}
            />
            <span className="min-w-0 flex-1">
              <span className="flex justify-between gap-2">
                <span className="font-medium">{planName(p.tier)}</span>
                <span className="text-slate-600 dark:text-slate-400">
                  {formatPrice(p.price_cents, plans.currency)}
                  {p.price_cents ? " / month" : ""}
                </span>
              </span>
              {reason ? (
                <span id={`${id}-why`} className="block text-xs text-slate-500 dark:text-slate-400" data-testid={`plan-unavailable-${p.tier}`}>
                  {reason}
                </span>
              ) : null}
            </span>
          </label>
        );
      })}
    </fieldset>
  );
}
