/** One usage figure against its limit, as a bar with the numbers (no bar when unlimited). */
export function UsageBar({
  label,
  used,
  limit,
  format,
  testId,
}: {
  label: string;
  used: number;
  limit: number | null;
  format: (n: number) => string;
  testId?: string;
}) {
  const pct = limit ? Math.min(100, (used / limit) * 100) : 0;
  const text = limit == null ? `${format(used)} (unlimited)` : `${format(used)} of ${format(limit)}`;
  const colour = pct >= 90 ? "bg-red-600" : pct >= 75 ? "bg-amber-500" : "bg-blue-600";
  return (
    <div data-testid={testId}>
      <div className="flex justify-between gap-2 text-sm">
        <span className="text-slate-600 dark:text-slate-400">{label}</span>
        <span data-testid={testId ? `${testId}-text` : undefined}>{text}</span>
      </div>
      {limit != null ? (
        <div
          role="meter"
          aria-label={label}
          aria-valuemin={0}
          aria-valuemax={limit}
          aria-valuenow={Math.min(used, limit)}
          aria-valuetext={text}
          className="mt-1 h-2 overflow-hidden rounded-full bg-slate-200 dark:bg-slate-800"
        >
          <div className={`h-full rounded-full ${colour}`} style={{ width: `${Math.max(pct, used > 0 ? 1 : 0)}%` }} />
        </div>
      ) : null}
    </div>
  );
}
