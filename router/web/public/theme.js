// Applies the saved theme before the app loads (no flash of the wrong colours).
// A file rather than an inline script, so the Content-Security-Policy needs no
// 'unsafe-inline' (router/src/http/middleware.rs).
try {
  var t = localStorage.getItem("jarvis.theme");
  if (t === "dark" || (t !== "light" && matchMedia("(prefers-color-scheme: dark)").matches))
    document.documentElement.classList.add("dark");
} catch (e) {}
