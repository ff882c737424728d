import { useSyncExternalStore } from "react";

/** Whether the CSS media query matches now, kept current as the window changes. */
export function useMediaQuery(query: string): boolean {
  return useSyncExternalStore(
    (f) => {
      const m = window.matchMedia?.(query);
      m?.addEventListener?.("change", f);
      return () => m?.removeEventListener?.("change", f);
    },
    () => !!window.matchMedia?.(query).matches,
    () => false,
  );
}

/** Phone widths (below Tailwind's `sm`). */
export const PHONE_QUERY = "(max-width: 639px)";
