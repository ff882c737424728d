// Measures the built app: gzipped JS size of dist/, and time to interactive of the
// chat page in headless Chromium (navigation start → chat input enabled and the
// conversation list loaded), for a signed-in user, cold cache, median of N loads.
//
// With BASELINE_DIST=<another build's dist directory> (e.g. the app of an older
// commit: `git worktree add /tmp/old <rev> && (cd /tmp/old/router/web && npm ci &&
// npm run build)`), the baseline is served by a second router in the same run and
// measured the same way, loads of the two taking turns, and the ratios are printed:
// the machine's noise hits both alike.
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { launchBrowser, startRouter, WEB } from "./lib.mjs";

const RUNS = Number(process.env.RUNS ?? 5);

/** Gzipped JS of a build: what the first load fetches, and everything. */
function bundle(dist, name) {
  const assets = path.join(dist, "assets");
  const index = fs.readFileSync(path.join(dist, "index.html"), "utf8");
  let total = 0;
  let initial = 0;
  for (const f of fs.readdirSync(assets).filter((f) => f.endsWith(".js"))) {
    const gz = zlib.gzipSync(fs.readFileSync(path.join(assets, f)), { level: 9 }).length;
    total += gz;
    if (index.includes(f)) initial += gz;
    if (process.env.VERBOSE) console.log(`  ${name} ${f}: ${(gz / 1024).toFixed(1)} KiB gzipped${index.includes(f) ? " (initial)" : " (lazy)"}`);
  }
  console.log(`${name}: JS gzipped ${(initial / 1024).toFixed(1)} KiB on first load, ${(total / 1024).toFixed(1)} KiB in all`);
  return { initial, total };
}

/** A router serving `dist`, and a signed-in user's refresh token on it. */
async function target(dist) {
  const router = await startRouter({ env: { JARVIS_WEB_DIR: dist } });
  const r = await fetch(`${router.url}/api/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email: `measure-${Date.now()}@example.com`, password: "correct-horse-battery" }),
  });
  const { refresh_token } = await r.json();
  return { router, refresh: refresh_token, times: [] };
}

/** One cold load of the chat page; the refresh token rotated is carried on. */
async function load(browser, t) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await ctx.addInitScript((token) => {
    if (!sessionStorage.getItem("seeded")) {
      localStorage.setItem("jarvis.refresh_token", token);
      sessionStorage.setItem("seeded", "1");
    }
  }, t.refresh);
  const page = await ctx.newPage();
  await page.goto(`${t.router.url}/chat`, { waitUntil: "commit" });
  await page.waitForFunction(() => {
    const input = document.querySelector('[data-testid="chat-input"]');
    return input && !input.disabled && document.body.innerText.includes("No conversations yet.");
  }, null, { polling: "raf", timeout: 30_000 });
  const tti = await page.evaluate(() => performance.now());
  t.refresh = await page.evaluate(() => localStorage.getItem("jarvis.refresh_token"));
  t.times.push(tti);
  await ctx.close();
}

const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

const current = { dist: path.join(WEB, "dist"), name: "this build" };
const baseline = process.env.BASELINE_DIST ? { dist: path.resolve(process.env.BASELINE_DIST), name: "baseline" } : null;
const builds = baseline ? [baseline, current] : [current];
for (const b of builds) b.size = bundle(b.dist, b.name);

const browser = await launchBrowser();
try {
  for (const b of builds) b.t = await target(b.dist);
  for (let i = 0; i < RUNS; i++) for (const b of builds) await load(browser, b.t);
  for (const b of builds) {
    const times = b.t.times;
    console.log(`${b.name}: chat page time to interactive median ${median(times).toFixed(0)} ms (min ${Math.min(...times).toFixed(0)}, max ${Math.max(...times).toFixed(0)}; ${RUNS} cold loads, localhost)`);
  }
  if (baseline) {
    const ratio = (a, b) => (a / b).toFixed(2);
    console.log(
      `this build against the baseline: first-load JS ${ratio(current.size.initial, baseline.size.initial)}×, all JS ${ratio(current.size.total, baseline.size.total)}×, time to interactive ${ratio(median(current.t.times), median(baseline.t.times))}×`,
    );
  }
} finally {
  await browser.close();
  for (const b of builds) await b.t?.router.stop();
}
