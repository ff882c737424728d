import { useEffect, useState, type ReactNode } from "react";
import { createBrowserRouter, Navigate, NavLink, Outlet, Route, RouterProvider, Routes, useLocation } from "react-router";
import { Button } from "./components/ui";
import { ServicesContext, useServices, useUser, type AppServices } from "./context";
import { setTheme, useTheme } from "./lib/settings";
import { AccountPage } from "./pages/AccountPage";
import { AuthPage } from "./pages/AuthPage";
import { ChatPage } from "./pages/ChatPage";
import { DocumentsPage } from "./pages/DocumentsPage";
import { FilesPage } from "./pages/FilesPage";
import { LandingPage } from "./pages/LandingPage";

function ThemeToggle() {
  // The theme store, not a copy: the Account page can change it too.
  const { theme, dark } = useTheme();
  return (
    <Button
      variant="ghost"
      aria-label={dark ? "Switch to light theme" : "Switch to dark theme"}
      title={`Theme: ${theme}`}
      data-testid="theme-toggle"
      onClick={() => setTheme(dark ? "light" : "dark")}
    >
      <span aria-hidden>{dark ? "☀" : "☾"}</span>
    </Button>
  );
}

const navClass = ({ isActive }: { isActive: boolean }) =>
  `inline-flex min-h-11 shrink-0 items-center rounded-md px-1.5 text-sm sm:min-h-0 sm:px-2 sm:py-1 ${isActive ? "bg-slate-200 font-medium dark:bg-slate-800" : "hover:bg-slate-100 dark:hover:bg-slate-900"}`;

function Shell({ children }: { children: ReactNode }) {
  const { api, chat } = useServices();
  // The chat connection lives as long as the signed-in app, across pages.
  useEffect(() => {
    chat.conn.start();
    return () => chat.conn.stop();
  }, [chat]);
  return (
    <div className="flex h-full flex-col">
      <a href="#main" className="sr-only focus:not-sr-only focus:absolute focus:left-2 focus:top-2 focus:z-50 focus:rounded focus:bg-white focus:px-2 focus:py-1 dark:focus:bg-slate-900">
        Skip to content
      </a>
      <header className="flex h-14 shrink-0 items-center gap-1 border-b border-slate-200 px-2 sm:gap-3 sm:px-4 dark:border-slate-800">
        <span className="mr-0.5 flex shrink-0 items-center gap-1.5 font-semibold tracking-wide text-blue-700 sm:mr-3 dark:text-blue-400">
          <img src="/favicon.svg" alt="" className="h-6 w-6" />
          <span className="sr-only sm:not-sr-only">JARVIS</span>
        </span>
        <nav aria-label="Main" className="flex min-w-0 flex-1 gap-0 overflow-x-auto sm:gap-1">
          <NavLink to="/chat" className={navClass}>Chat</NavLink>
          <NavLink to="/documents" className={navClass}>Documents</NavLink>
          <NavLink to="/files" className={navClass}>Files</NavLink>
          <NavLink to="/account" className={navClass}>Account</NavLink>
        </nav>
        <ThemeToggle />
        <Button
          variant="ghost"
          title="Sign out"
          className="max-sm:px-2"
          onClick={() => {
            // logout() forgets the session at once (RequireUser then shows the
            // sign-in page with "You are signed out."), then tells the server.
            void api.logout();
          }}
        >
          <svg aria-hidden viewBox="0 0 16 16" className="h-4 w-4 fill-none stroke-current sm:hidden" strokeWidth="1.4" strokeLinecap="round" strokeLinejoin="round">
            <path d="M6 2.5H3v11h3M10.5 5l3 3-3 3M13.5 8H6" />
          </svg>
          <span className="sr-only sm:not-sr-only">Sign out</span>
        </Button>
      </header>
      <div id="main" className="min-h-0 flex-1 overflow-auto">{children}</div>
    </div>
  );
}

/** The signed-in part of the app: one shell (and one chat connection) for all its pages. */
function RequireUser() {
  const user = useUser();
  const { api } = useServices();
  const location = useLocation();
  if (!user)
    return api.signedOut ? (
      <Navigate to="/signin" replace state={{ notice: "You are signed out." }} />
    ) : (
      <Navigate to="/signin" replace state={{ from: location.pathname, notice: "Please sign in." }} />
    );
  return (
    <Shell>
      <Outlet />
    </Shell>
  );
}

function Restoring({ children }: { children: ReactNode }) {
  const { api } = useServices();
  const [ready, setReady] = useState(!api.hasStoredSession() || !!api.user);
  useEffect(() => {
    if (ready) return;
    api
      .refresh()
      .catch(() => false)
      .finally(() => setReady(true));
  }, [api, ready]);
  if (!ready) return <p className="p-4 text-sm text-slate-500 dark:text-slate-400">Loading…</p>;
  return <>{children}</>;
}

export function AppRoutes() {
  const user = useUser();
  return (
    <Routes>
      <Route path="/" element={user ? <Navigate to="/chat" replace /> : <LandingPage />} />
      <Route path="/signin" element={user ? <Navigate to="/chat" replace /> : <AuthPage mode="signin" />} />
      <Route path="/signup" element={user ? <Navigate to="/chat" replace /> : <AuthPage mode="signup" />} />
      <Route element={<RequireUser />}>
        <Route path="/chat" element={<ChatPage />} />
        <Route path="/chat/:id" element={<ChatPage />} />
        <Route path="/documents" element={<DocumentsPage />} />
        <Route path="/documents/:id" element={<DocumentsPage />} />
        <Route path="/files" element={<FilesPage />} />
        <Route path="/account" element={<AccountPage />} />
      </Route>
      <Route path="*" element={<Navigate to={user ? "/chat" : "/signin"} replace />} />
    </Routes>
  );
}

export function App({ services }: { services: AppServices }) {
  // A data router, so pages can ask before unsaved edits are left (useBlocker);
  // the routes themselves stay in <AppRoutes>.
  const [router] = useState(() =>
    createBrowserRouter([
      {
        path: "*",
        element: (
          <Restoring>
            <AppRoutes />
          </Restoring>
        ),
      },
    ]),
  );
  return (
    <ServicesContext.Provider value={services}>
      <RouterProvider router={router} />
    </ServicesContext.Provider>
  );
}
