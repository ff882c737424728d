/** Example prompts a user may start from. */
export const EXAMPLE_PROMPTS = [
  { title: "Write a document", prompt: "Write a one-page project plan for launching a small newsletter, as a Markdown document." },
  { title: "Run some code", prompt: "Write a Python script that prints the first 20 prime numbers, run it and show me the output." },
  { title: "Analyse data", prompt: "Make a CSV of 12 months of made-up sales figures, then tell me the best and worst month." },
  { title: "Explain something", prompt: "Explain how HTTPS keeps a connection private, in five short bullet points." },
];

/** The empty chat: a greeting and example prompts; picking one sends it. */
export function EmptyChat({ onPick, disabled = false }: { onPick: (prompt: string) => void; disabled?: boolean }) {
  return (
    <div className="py-10 text-center text-slate-500 dark:text-slate-400 sm:py-16" data-testid="empty-chat">
      <p className="text-lg font-medium text-slate-700 dark:text-slate-300">How can I help?</p>
      <p className="text-sm">Ask Jarvis to write, research or run code in your workspace.</p>
      <ul className="mx-auto mt-6 grid max-w-2xl gap-2 text-left sm:grid-cols-2" aria-label="Example prompts">
        {EXAMPLE_PROMPTS.map((p) => (
          <li key={p.title}>
            <button
              type="button"
              disabled={disabled}
              onClick={() => onPick(p.prompt)}
              className="h-full w-full rounded-lg border border-slate-200 px-3 py-2 text-sm hover:bg-slate-50 focus-visible:outline-2 disabled:cursor-not-allowed disabled:opacity-60 dark:border-slate-800 dark:hover:bg-slate-900"
              data-testid="example-prompt"
            >
              <span className="block font-medium text-slate-800 dark:text-slate-200">{p.title}</span>
              <span className="block text-slate-500 dark:text-slate-400">{p.prompt}</span>
            </button>
          </li>
        ))}
      </ul>
    </div>
  );
}
