// Small preferences kept in localStorage: the theme. (Spoken answers are an account
// setting, `voice_answers` of /api/me.)

export type Theme = "light" | "dark" | "system";
const THEME_KEY = "jarvis.theme";

export function getTheme(): Theme {
  const t = localStorage.getItem(THEME_KEY);
  return t === "light" || t === "dark" ? t : "system";
}

export function applyTheme(t: Theme = getTheme()) {
  const dark =
    t === "dark" || (t === "system" && window.matchMedia?.("(prefers-color-scheme: dark)").matches);
  document.documentElement.classList.toggle("dark", !!dark);
  document.documentElement.style.colorScheme = dark ? "dark" : "light";
}

export function setTheme(t: Theme) {
  if (t === "system") localStorage.removeItem(THEME_KEY);
  else localStorage.setItem(THEME_KEY, t);
  applyTheme(t);
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
