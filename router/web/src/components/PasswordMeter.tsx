import { useEffect, useState } from "react";
import type { Strength } from "../lib/passwordStrength";

type Checker = typeof import("../lib/passwordStrength").checkPassword;

let loading: Promise<Checker> | null = null;
/** zxcvbn and its dictionaries (~ 400 KB) load on first use, not with the app. */
function loadChecker(): Promise<Checker> {
  loading ??= import("../lib/passwordStrength").then((m) => m.checkPassword);
  return loading;
}

const labels = ["Very weak", "Weak", "Fair", "Strong", "Very strong"];
const colours = ["bg-red-600", "bg-red-500", "bg-amber-500", "bg-green-600", "bg-green-700"];

/** A strength meter for a new password, with why it is weak and what to do. */
export function PasswordMeter({ id, password, email }: { id: string; password: string; email: string }) {
  const [strength, setStrength] = useState<Strength | null>(null);

  useEffect(() => {
    let live = true;
    if (!password) {
      setStrength(null);
      return;
    }
    void loadChecker().then((check) => {
      if (live) setStrength(check(password, email));
    });
    return () => {
      live = false;
    };
  }, [password, email]);

  const score = strength?.score ?? 0;
  return (
    <div id={id} className="mt-1 space-y-1 text-xs" data-testid="password-meter">
      <div className="flex items-center gap-2">
        <div
          role="meter"
          aria-label="Strength"
          aria-valuemin={0}
          aria-valuemax={4}
          aria-valuenow={strength ? score : 0}
          aria-valuetext={strength ? labels[score] : "No password yet"}
          className="flex h-1.5 flex-1 gap-1"
        >
          {[0, 1, 2, 3].map((i) => (
            <span
              key={i}
              className={`h-full flex-1 rounded-full ${strength && i < Math.max(score, 1) ? colours[score] : "bg-slate-200 dark:bg-slate-700"}`}
            />
          ))}
        </div>
        <span aria-hidden className="w-20 text-right text-slate-600 dark:text-slate-400">
          {strength ? labels[score] : ""}
        </span>
      </div>
      <p aria-live="polite" className={strength && !strength.ok ? "text-red-700 dark:text-red-300" : "text-slate-500"} data-testid="password-advice">
        {!strength
          ? "At least 10 characters. A few unrelated words work well."
          : strength.ok
            ? "Strong enough."
            : `${strength.warning ?? "Too easy to guess."} ${strength.suggestions.join(" ") || "Add a few more uncommon words."}`}
      </p>
    </div>
  );
}
