// Small preferences kept in localStorage: the theme. (Spoken answers are an account
// setting, `voice_answers` of /api/me.)

import { useSyncExternalStore } from "react";

export type Theme = "light" | "dark" | "system";
const THEME_KEY = "jarvis.theme";

export function getTheme(): Theme {
  try {
    const t = localStorage.getItem(THEME_KEY);
    return t === "light" || t === "dark" ? t : "system";
  } catch {
    return "system";
  }
}

/** Whether `t` shows dark colours now (`system` follows the operating system). */
export function isDark(t: Theme = getTheme()): boolean {
  return t === "dark" || (t === "system" && !!window.matchMedia?.("(prefers-color-scheme: dark)").matches);
}

export function applyTheme(t: Theme = getTheme()) {
  const dark = isDark(t);
  document.documentElement.classList.toggle("dark", dark);
  document.documentElement.style.colorScheme = dark ? "dark" : "light";
}

// The theme is one small store: the header's button and the Account page both read
// it, so a change in one place shows everywhere at once (and in other tabs).
const themeListeners = new Set<() => void>();

function notifyTheme() {
  for (const f of themeListeners) f();
}

export function setTheme(t: Theme) {
  try {
    if (t === "system") localStorage.removeItem(THEME_KEY);
    else localStorage.setItem(THEME_KEY, t);
  } catch {
    /* storage off: the theme still applies to this page */
  }
  applyTheme(t);
  notifyTheme();
}

/** Calls `f` whenever the theme changes (here, in another tab, or the system's). */
export function subscribeTheme(f: () => void): () => void {
  if (themeListeners.size === 0) startWatching();
  themeListeners.add(f);
  return () => {
    themeListeners.delete(f);
    if (themeListeners.size === 0) stopWatching();
  };
}

let stopWatching = () => {};

function startWatching() {
  const onStorage = (e: StorageEvent) => {
    if (e.key !== null && e.key !== THEME_KEY) return;
    applyTheme();
    notifyTheme();
  };
  const media = window.matchMedia?.("(prefers-color-scheme: dark)");
  const onMedia = () => {
    if (getTheme() !== "system") return;
    applyTheme();
    notifyTheme();
  };
  window.addEventListener("storage", onStorage);
  media?.addEventListener?.("change", onMedia);
  stopWatching = () => {
    window.removeEventListener("storage", onStorage);
    media?.removeEventListener?.("change", onMedia);
  };
}

/** The saved theme and whether it shows dark now, kept current. */
export function useTheme(): { theme: Theme; dark: boolean } {
  const key = useSyncExternalStore(subscribeTheme, () => `${getTheme()}:${isDark()}`);
  const [theme, dark] = key.split(":");
  return { theme: theme as Theme, dark: dark === "true" };
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function formatDate(s: string): string {
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? s : d.toLocaleString();
}
