import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import "./index.css";
import { Api } from "./lib/api";
import { ChatStore } from "./lib/chatStore";
import { ChatConnection, wsUrl } from "./lib/connection";
import { applyTheme } from "./lib/settings";

applyTheme();
window.matchMedia?.("(prefers-color-scheme: dark)").addEventListener?.("change", () => applyTheme());

const api = new Api();
const conn = new ChatConnection({ url: wsUrl(), getToken: () => api.token() });
const chat = new ChatStore(api, conn);
// A new login starts a fresh connection with the new token.
api.onUserChange((u) => {
  if (!u) {
    conn.stop();
    chat.reset();
  }
});

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App services={{ api, chat }} />
  </StrictMode>,
);
