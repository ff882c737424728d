// The agent's sandbox wants to reach a host outside the allow-list: the user
// allows it once, always (for this workspace) or denies it. Escape denies. The
// card goes when answered here, in another tab, or when the router stops waiting.

import { useEffect, useRef, useState, useSyncExternalStore } from "react";
import type { EgressPrompts, EgressQuestion } from "../lib/egressPrompts";
import { target } from "../lib/egressPrompts";
import type { EgressAnswer } from "../lib/types";
import { Button } from "./ui";

function secondsLeft(q: EgressQuestion, now: number): number {
  return Math.max(0, Math.ceil((q.expiresAt - now) / 1000));
}

function Question({ q, onAnswer }: { q: EgressQuestion; onAnswer: (d: EgressAnswer) => void }) {
  const first = useRef<HTMLButtonElement>(null);
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    // Focus moves to the question when it appears (the agent waits on it).
    first.current?.focus();
  }, []);
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, []);
  const where = target(q);
  const titleId = `egress-${q.id}-title`;
  return (
    <div
      role="alertdialog"
      aria-modal="false"
      aria-labelledby={titleId}
      aria-describedby={`egress-${q.id}-desc`}
      data-testid="egress-prompt"
      className="mx-auto mb-2 max-w-3xl rounded-md border border-amber-300 bg-amber-50 px-3 py-2 text-sm text-amber-900 dark:border-amber-800 dark:bg-amber-950 dark:text-amber-100"
      onKeyDown={(e) => {
        if (e.key === "Escape") {
          e.preventDefault();
          onAnswer("deny");
        }
      }}
    >
      <p id={titleId} className="font-medium">
        The agent wants to reach <code className="font-mono">{where}</code>
      </p>
      <p id={`egress-${q.id}-desc`} className="mt-0.5 text-xs">
        It is not on your workspace's allow-list. The agent waits for your answer ({secondsLeft(q, now)} s left); Escape
        denies.
      </p>
      <div className="mt-2 flex flex-wrap gap-2">
        <Button ref={first} variant="primary" aria-label={`Allow ${where} once`} onClick={() => onAnswer("once")}>
          Allow once
        </Button>
        <Button aria-label={`Always allow ${q.host} for this workspace`} onClick={() => onAnswer("always")}>
          Always allow
        </Button>
        <Button variant="danger" aria-label={`Deny ${where}`} onClick={() => onAnswer("deny")}>
          Deny
        </Button>
      </div>
    </div>
  );
}

/** Every open question, oldest first. */
export function EgressPrompt({ prompts }: { prompts: EgressPrompts }) {
  const questions = useSyncExternalStore(prompts.subscribe, prompts.getSnapshot);
  if (questions.length === 0) return null;
  return (
    <div className="px-3" aria-live="assertive">
      {questions.map((q) => (
        <Question key={q.id} q={q} onAnswer={(d) => prompts.answer(q.id, d)} />
      ))}
    </div>
  );
}
