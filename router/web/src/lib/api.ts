// The HTTP API client: built-in accounts, token refresh, JSON and blob requests.
// The access token lives only in memory; the refresh token in localStorage.

import { apiErrorText } from "./messages";
import type { Session, UploadedFile, User } from "./types";

export const REFRESH_KEY = "jarvis.refresh_token";

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    public serverMessage: string,
    public retryAfter?: number,
  ) {
    super(apiErrorText(code, serverMessage));
    this.name = "ApiError";
  }
}

type FetchFn = (input: string, init?: RequestInit) => Promise<Response>;

export interface StorageLike {
  getItem(k: string): string | null;
  setItem(k: string, v: string): void;
  removeItem(k: string): void;
}

export interface ApiOptions {
  base?: string;
  fetch?: FetchFn;
  storage?: StorageLike;
  /** Refresh this many seconds before the access token expires. */
  refreshMarginSecs?: number;
  now?: () => number;
}

async function errorFrom(res: Response): Promise<ApiError> {
  let code = `http_${res.status}`;
  let message = res.statusText;
  try {
    const body = (await res.json()) as { error?: { code?: string; message?: string } };
    if (body?.error?.code) code = body.error.code;
    if (body?.error?.message) message = body.error.message;
  } catch {
    /* not JSON */
  }
  const ra = Number(res.headers.get("retry-after"));
  return new ApiError(res.status, code, message, Number.isFinite(ra) && ra > 0 ? ra : undefined);
}

export class Api {
  private base: string;
  private fetchFn: FetchFn;
  private storage: StorageLike;
  private margin: number;
  private now: () => number;
  private access: string | null = null;
  private expiresAt = 0;
  private refreshing: Promise<boolean> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private listeners = new Set<(u: User | null) => void>();
  user: User | null = null;
  /** True once the user signed out (until the next sign-in): the sign-in page says so. */
  signedOut = false;

  constructor(opts: ApiOptions = {}) {
    this.base = opts.base ?? "";
    this.fetchFn = opts.fetch ?? ((i, init) => fetch(i, init));
    this.storage = opts.storage ?? window.localStorage;
    this.margin = opts.refreshMarginSecs ?? 60;
    this.now = opts.now ?? (() => Date.now());
  }

  onUserChange(f: (u: User | null) => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  private setUser(u: User | null) {
    this.user = u;
    for (const f of this.listeners) f(u);
  }

  hasStoredSession(): boolean {
    return !!this.storage.getItem(REFRESH_KEY);
  }

  private async raw(path: string, init: RequestInit): Promise<Response> {
    try {
      return await this.fetchFn(this.base + path, init);
    } catch {
      throw new ApiError(0, "network", "network error");
    }
  }

  private adopt(s: Session) {
    this.access = s.access_token;
    const ttl = s.expires_in ?? 900;
    this.expiresAt = this.now() + ttl * 1000;
    this.storage.setItem(REFRESH_KEY, s.refresh_token);
    if (this.timer) clearTimeout(this.timer);
    const wait = Math.max(5, ttl - this.margin) * 1000;
    // Refresh shortly before expiry, so open pages keep working.
    this.timer = setTimeout(() => void this.refresh(), wait);
    this.setUser(s.user);
  }

  private clear() {
    this.access = null;
    this.expiresAt = 0;
    this.storage.removeItem(REFRESH_KEY);
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.setUser(null);
  }

  private async authPost(path: string, body: unknown): Promise<Session> {
    const res = await this.raw(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!res.ok) throw await errorFrom(res);
    return (await res.json()) as Session;
  }

  async register(email: string, password: string): Promise<User> {
    const s = await this.authPost("/api/auth/register", { email, password });
    this.signedOut = false;
    this.adopt(s);
    return s.user;
  }

  async login(email: string, password: string): Promise<User> {
    const s = await this.authPost("/api/auth/login", { email, password });
    this.signedOut = false;
    this.adopt(s);
    return s.user;
  }

  async logout(): Promise<void> {
    const rt = this.storage.getItem(REFRESH_KEY);
    this.signedOut = true;
    this.clear();
    if (rt) {
      try {
        await this.authPost("/api/auth/logout", { refresh_token: rt });
      } catch {
        /* the local session is gone either way */
      }
    }
  }

  /** Trades the stored refresh token for a new session; false when it has ended. */
  refresh(): Promise<boolean> {
    if (this.refreshing) return this.refreshing;
    const rt = this.storage.getItem(REFRESH_KEY);
    if (!rt) return Promise.resolve(false);
    this.refreshing = (async () => {
      try {
        const res = await this.raw("/api/auth/refresh", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ refresh_token: rt }),
        });
        if (!res.ok) {
          const err = await errorFrom(res);
          // Only a definite refusal ends the session; a network blip does not.
          if (res.status === 401 || res.status === 403) this.clear();
          throw err;
        }
        this.adopt((await res.json()) as Session);
        return true;
      } finally {
        this.refreshing = null;
      }
    })().catch((e: unknown) => {
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) return false;
      throw e;
    });
    return this.refreshing;
  }

  /** A valid access token, refreshed first when it is about to expire. */
  async token(): Promise<string | null> {
    if (this.access && this.now() < this.expiresAt - this.margin * 1000) return this.access;
    if (!this.storage.getItem(REFRESH_KEY)) return this.access;
    const ok = await this.refresh();
    return ok ? this.access : null;
  }

  /** Sends a request with the bearer token; retries once after refreshing on `token_expired`. */
  async fetchAuthed(path: string, init: RequestInit = {}): Promise<Response> {
    for (let attempt = 0; ; attempt++) {
      const token = await this.token();
      if (!token) throw new ApiError(401, "unauthorized", "sign in first");
      const headers = new Headers(init.headers);
      headers.set("authorization", `Bearer ${token}`);
      const res = await this.raw(path, { ...init, headers });
      if (res.ok) return res;
      const err = await errorFrom(res);
      if (res.status === 401 && attempt === 0 && (err.code === "token_expired" || err.code === "invalid_token")) {
        this.access = null;
        if (await this.refresh()) continue;
      }
      if (res.status === 401) this.clear();
      throw err;
    }
  }

  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.headers = { "content-type": "application/json" };
      init.body = JSON.stringify(body);
    }
    const res = await this.fetchAuthed(path, init);
    if (res.status === 204) return undefined as T;
    return (await res.json()) as T;
  }

  get<T>(path: string) {
    return this.json<T>("GET", path);
  }

  async blob(path: string): Promise<Blob> {
    const res = await this.fetchAuthed(path);
    return res.blob();
  }

  /**
   * Uploads `files` (`POST /api/files`, one `file` field each) and reports the
   * fraction sent so far. XMLHttpRequest, not fetch: fetch cannot report upload
   * progress. Retries once after refreshing an expired token.
   */
  async upload(files: File[], onProgress?: (fraction: number) => void): Promise<UploadedFile[]> {
    const form = new FormData();
    for (const f of files) form.append("file", f, f.name);
    for (let attempt = 0; ; attempt++) {
      const token = await this.token();
      if (!token) throw new ApiError(401, "unauthorized", "sign in first");
      const res = await new Promise<{ status: number; text: string }>((resolve, reject) => {
        const xhr = new XMLHttpRequest();
        xhr.open("POST", this.base + "/api/files");
        xhr.setRequestHeader("authorization", `Bearer ${token}`);
        xhr.upload.onprogress = (e) => {
          if (e.lengthComputable && onProgress) onProgress(e.total ? e.loaded / e.total : 1);
        };
        xhr.onload = () => resolve({ status: xhr.status, text: xhr.responseText });
        xhr.onerror = () => reject(new ApiError(0, "network", "network error"));
        xhr.onabort = () => reject(new ApiError(0, "network", "upload cancelled"));
        xhr.send(form);
      });
      let body: { files?: UploadedFile[]; error?: { code?: string; message?: string } } = {};
      try {
        body = JSON.parse(res.text);
      } catch {
        /* not JSON */
      }
      if (res.status >= 200 && res.status < 300 && body.files) {
        onProgress?.(1);
        return body.files;
      }
      const code = body.error?.code ?? `http_${res.status}`;
      if (res.status === 401 && attempt === 0 && (code === "token_expired" || code === "invalid_token")) {
        this.access = null;
        if (await this.refresh()) continue;
      }
      throw new ApiError(res.status, code, body.error?.message ?? "upload failed");
    }
  }

  /** Downloads `path` with the bearer token and saves it as `filename`. */
  async download(path: string, filename: string): Promise<void> {
    const blob = await this.blob(path);
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = filename;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }
}
