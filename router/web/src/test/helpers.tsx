import type { ReactNode } from "react";
import { MemoryRouter } from "react-router";
import { ServicesContext } from "../context";
import { Api, type StorageLike } from "../lib/api";
import { ChatStore } from "../lib/chatStore";
import { ChatConnection } from "../lib/connection";

export class MemStorage implements StorageLike {
  m = new Map<string, string>();
  getItem(k: string) {
    return this.m.get(k) ?? null;
  }
  setItem(k: string, v: string) {
    this.m.set(k, v);
  }
  removeItem(k: string) {
    this.m.delete(k);
  }
}

export type Call = { url: string; method: string; headers: Headers; body: unknown };

/** An Api whose fetch is answered by `handler`; every call is recorded. */
export function fakeApi(handler: (c: Call) => Response | Promise<Response>) {
  const calls: Call[] = [];
  const storage = new MemStorage();
  const api = new Api({
    storage,
    fetch: async (url, init = {}) => {
      const c: Call = {
        url,
        method: init.method ?? "GET",
        headers: new Headers(init.headers),
        body: typeof init.body === "string" ? JSON.parse(init.body) : init.body,
      };
      calls.push(c);
      return handler(c);
    },
  });
  return { api, calls, storage };
}

export const json = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });

export const session = (n = 1) => ({
  access_token: `access${n}`,
  refresh_token: `refresh${n}`,
  expires_in: 900,
  user: { id: "u1", email: "a@example.com", tier: "free", subscription_active: true },
});

export function withServices(api: Api, children: ReactNode) {
  const conn = new ChatConnection({ url: "ws://x/ws", getToken: async () => null, setTimer: () => 0, clearTimer: () => {} });
  return (
    <ServicesContext.Provider value={{ api, chat: new ChatStore(api, conn) }}>
      <MemoryRouter>{children}</MemoryRouter>
    </ServicesContext.Provider>
  );
}
