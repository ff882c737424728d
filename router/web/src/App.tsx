import { useEffect, useState, type ReactNode } from "react";
import { BrowserRouter, Navigate, NavLink, Outlet, Route, Routes, useLocation } from "react-router";
import { Button } from "./components/ui";
import { ServicesContext, useServices, useUser, type AppServices } from "./context";
import { getTheme, setTheme } from "./lib/settings";
import { AccountPage } from "./pages/AccountPage";
import { AuthPage } from "./pages/AuthPage";
import { ChatPage } from "./pages/ChatPage";
import { DocumentsPage } from "./pages/DocumentsPage";
import { FilesPage } from "./pages/FilesPage";
import { LandingPage } from "./pages/LandingPage";

function ThemeToggle() {
  const [dark, setDark] = useState(() => document.documentElement.classList.contains("dark"));
  return (
    <Button
      variant="ghost"
      aria-label={dark ? "Switch to light theme" : "Switch to dark theme"}
      title={`Theme: ${getTheme()}`}
      onClick={() => {
        setTheme(dark ? "light" : "dark");
        setDark(!dark);
      }}
    >
      <span aria-hidden>{dark ? "☀" : "☾"}</span>
    </Button>
  );
}

const navClass = ({ isActive }: { isActive: boolean }) =>
  `rounded-md px-2 py-1 text-sm ${isActive ? "bg-slate-200 font-medium dark:bg-slate-800" : "hover:bg-slate-100 dark:hover:bg-slate-900"}`;

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
        <span className="mr-1 font-semibold tracking-wide text-blue-600 sm:mr-3">JARVIS</span>
        <nav aria-label="Main" className="flex min-w-0 flex-1 gap-0.5 overflow-x-auto sm:gap-1">
          <NavLink to="/chat" className={navClass}>Chat</NavLink>
          <NavLink to="/documents" className={navClass}>Documents</NavLink>
          <NavLink to="/files" className={navClass}>Files</NavLink>
          <NavLink to="/account" className={navClass}>Account</NavLink>
        </nav>
        <ThemeToggle />
        <Button
          variant="ghost"
          onClick={() => {
            // logout() forgets the session at once (RequireUser then shows the
            // sign-in page with "You are signed out."), then tells the server.
            void api.logout();
          }}
        >
          Sign out
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
  if (!ready) return <p className="p-4 text-sm text-slate-500">Loading…</p>;
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
  return (
    <ServicesContext.Provider value={services}>
      <BrowserRouter>
        <Restoring>
          <AppRoutes />
        </Restoring>
      </BrowserRouter>
    </ServicesContext.Provider>
  );
}
