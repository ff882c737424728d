import { describe, expect, it } from "vitest";
import { fakeApi, json, session } from "../test/helpers";
import { ApiError, REFRESH_KEY } from "./api";

describe("Api", () => {
  it("keeps the refresh token in storage and the access token in memory only", async () => {
    const { api, storage } = fakeApi(() => json(session(), 201));
    await api.register("a@example.com", "password123");
    expect(storage.getItem(REFRESH_KEY)).toBe("refresh1");
    expect([...storage.m.values()]).not.toContain("access1");
  });

  it("refreshes on 401 token_expired and retries once", async () => {
    let n = 0;
    const { api, calls } = fakeApi((c) => {
      if (c.url === "/api/auth/login") return json(session(1));
      if (c.url === "/api/auth/refresh") return json(session(2));
      n++;
      return n === 1
        ? json({ error: { code: "token_expired", message: "expired" } }, 401)
        : json({ ok: c.headers.get("authorization") });
    });
    await api.login("a@example.com", "password123");
    expect(await api.get("/api/me")).toEqual({ ok: "Bearer access2" });
    expect(calls.find((c) => c.url === "/api/auth/refresh")!.body).toEqual({ refresh_token: "refresh1" });
  });

  it("signs out when the refresh token is refused", async () => {
    const { api, storage } = fakeApi((c) => {
      if (c.url === "/api/auth/login") return json(session(1));
      if (c.url === "/api/auth/refresh") return json({ error: { code: "invalid_refresh_token", message: "ended" } }, 401);
      return json({ error: { code: "token_expired", message: "expired" } }, 401);
    });
    await api.login("a@example.com", "password123");
    await expect(api.get("/api/me")).rejects.toBeInstanceOf(ApiError);
    expect(api.user).toBeNull();
    expect(storage.getItem(REFRESH_KEY)).toBeNull();
  });

  it("gives a clear message for each auth error code", async () => {
    for (const [code, status, text] of [
      ["invalid_credentials", 401, "Wrong email or password."],
      ["conflict", 409, "An account with this email already exists. Sign in instead."],
      ["account_disabled", 403, "This account is disabled. Contact support."],
      ["invalid_request", 422, "The password must be at least 10 characters long."],
      ["too_many_requests", 429, "Too many failed sign-ins; try again in 15 minutes."],
    ] as const) {
      const msg = code === "invalid_request" ? "the password must be at least 10 characters long" : code === "too_many_requests" ? "too many failed sign-ins; try again in 15 minutes" : "x";
      const { api } = fakeApi(() => json({ error: { code, message: msg } }, status));
      await expect(api.login("a@example.com", "pw")).rejects.toThrow(text);
    }
    const { api } = fakeApi(() => Promise.reject(new TypeError("failed")));
    await expect(api.login("a@example.com", "pw")).rejects.toThrow(/Can't reach the server/);
  });
});
