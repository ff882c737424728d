// Shared e2e support: a real router on a fresh database and a free port, and
// Debian's Chromium driven by playwright-core.
import { spawn, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const ROOT = path.resolve(WEB, "../..");
const PG = process.env.E2E_PG ?? "postgres://postgres@127.0.0.1:5432";

export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-background-networking",
  "--disable-gpu",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
  // Spoken answers start by themselves, as after a user's click in a real session.
  "--autoplay-policy=no-user-gesture-required",
];

export function launchBrowser() {
  const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
  if (!fs.existsSync(executablePath)) {
    throw new Error(`${executablePath} is missing: install Debian's chromium (apt-get install chromium, or ./scripts/setup.sh)`);
  }
  return chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export function psql(dbUrl, sql) {
  return execFileSync("psql", [dbUrl, "-v", "ON_ERROR_STOP=1", "-tAq", "-c", sql], { encoding: "utf8" }).trim();
}

/** The fake Anthropic API (sandbox::testing as a process): `push(reply…)` queues answers. */
export async function startFakeModel() {
  const targetDir = process.env.CARGO_TARGET_DIR ?? path.join(ROOT, "target");
  const child = spawn(path.join(targetDir, "debug/fake-anthropic"), [], { stdio: ["ignore", "pipe", "inherit"] });
  const url = await new Promise((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      if (out.includes("\n")) resolve(out.trim().split("\n")[0]);
    });
    child.once("exit", (code) => reject(new Error(`fake-anthropic exited (${code})`)));
  });
  return {
    url,
    async push(...replies) {
      const r = await fetch(`${url}/_fake/replies`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(replies),
      });
      if (!r.ok) throw new Error(`queuing replies: ${r.status} ${await r.text()}`);
    },
    stop() {
      child.kill("SIGKILL");
    },
  };
}

/** Builds (unless E2E_NO_BUILD) the router, the sandbox and the fake model API, and
 * starts the router with real local sandboxes (the real CLI) whose model upstream
 * is `modelUrl`; resolves when /healthz answers. */
export async function startRouter({ log = false, modelUrl, env = {} } = {}) {
  if (!fs.existsSync(path.join(WEB, "dist/index.html"))) throw new Error("router/web/dist is missing: run `npm run build` first");
  const targetDir = process.env.CARGO_TARGET_DIR ?? path.join(ROOT, "target");
  const bin = path.join(targetDir, "debug/router");
  const port = await freePort();
  const dbName = `jarvis_e2e_${randomBytes(5).toString("hex")}`;
  const dbUrl = `${PG}/${dbName}`;
  const data = fs.mkdtempSync(path.join(os.tmpdir(), "jarvis-e2e-"));
  // The sandbox user must reach the workspace directories bound into its jail.
  fs.chmodSync(data, 0o755);
  const child = spawn(bin, [], {
    cwd: ROOT,
    env: {
      ...process.env,
      DATABASE_URL: dbUrl,
      JARVIS_LISTEN: `127.0.0.1:${port}`,
      JARVIS_WEB_DIR: path.join(WEB, "dist"),
      JARVIS_STORAGE: `file:${path.join(data, "storage")}`,
      JARVIS_WORKSPACES_DIR: path.join(data, "workspaces"),
      JARVIS_RUN_DIR: path.join(data, "run"),
      JARVIS_SANDBOX_BIN: path.join(targetDir, "debug/sandbox"),
      JARVIS_CLAUDE_BIN: path.join(ROOT, ".tools/claude/node_modules/@anthropic-ai/claude-code/bin/claude.exe"),
      JARVIS_MODEL_UPSTREAM: modelUrl ?? "http://127.0.0.1:9",
      ANTHROPIC_API_KEY: "sk-ant-e2e-key",
      RUST_LOG: process.env.RUST_LOG ?? "warn",
      ...env,
    },
    stdio: ["ignore", log ? "inherit" : "ignore", log ? "inherit" : "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (d) => (stderr += d));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`router exited (${child.exitCode}):\n${stderr}`);
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.ok) break;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) throw new Error(`router did not answer /healthz in 60 s:\n${stderr}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url,
    dbUrl,
    async stop() {
      child.kill("SIGTERM");
      await new Promise((r) => (child.exitCode !== null ? r() : child.once("exit", r)));
      try {
        execFileSync("psql", [`${PG}/postgres`, "-qc", `drop database if exists ${dbName} with (force)`], { stdio: "ignore" });
      } catch {
        /* best effort */
      }
      fs.rmSync(data, { recursive: true, force: true });
    },
  };
}

/** Builds the binaries the run needs (unless E2E_NO_BUILD). */
export function buildBinaries() {
  if (process.env.E2E_NO_BUILD) return;
  execFileSync("cargo", ["build", "--quiet", "-p", "router", "--bin", "router"], { cwd: ROOT, stdio: "inherit" });
  execFileSync("cargo", ["build", "--quiet", "-p", "sandbox", "--bin", "sandbox"], { cwd: ROOT, stdio: "inherit" });
  execFileSync("cargo", ["build", "--quiet", "-p", "sandbox", "--features", "test-support", "--bin", "fake-anthropic"], { cwd: ROOT, stdio: "inherit" });
}

/** Where every suite's screenshots go (git-ignored). */
export const SHOTS = path.join(WEB, "e2e/screenshots");
fs.mkdirSync(SHOTS, { recursive: true });
/** The two widths every page is shown at. */
export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };
/** A password the server's strength check takes. */
export const PASSWORD = "correct-horse-battery";

/** A logger of a suite's steps, each with the seconds since the suite started. */
export function stepper(name) {
  const started = Date.now();
  const prefix = name ? `e2e ${name}:` : "e2e:";
  return (s) => console.log(`${prefix} ${((Date.now() - started) / 1000).toFixed(1)}s ${s}`);
}
