// Measures the built app: gzipped JS size of dist/, and time to interactive of the
// chat page in headless Chromium (navigation start → chat input enabled and the
// conversation list loaded), for a signed-in user, cold cache, median of N loads.
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { launchBrowser, startRouter, WEB } from "./lib.mjs";

const RUNS = Number(process.env.RUNS ?? 5);
const assets = path.join(WEB, "dist/assets");
let total = 0;
let initial = 0;
const index = fs.readFileSync(path.join(WEB, "dist/index.html"), "utf8");
for (const f of fs.readdirSync(assets).filter((f) => f.endsWith(".js"))) {
  const gz = zlib.gzipSync(fs.readFileSync(path.join(assets, f)), { level: 9 }).length;
  total += gz;
  if (index.includes(f)) initial += gz;
  console.log(`  ${f}: ${(gz / 1024).toFixed(1)} KiB gzipped${index.includes(f) ? " (initial)" : " (lazy)"}`);
}
console.log(`JS gzipped: ${(initial / 1024).toFixed(1)} KiB on first load, ${(total / 1024).toFixed(1)} KiB in all`);

const router = await startRouter();
const browser = await launchBrowser();
try {
  // A signed-in user: register once, then each load restores from the refresh token.
  const r = await fetch(`${router.url}/api/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email: `measure-${Date.now()}@example.com`, password: "correct-horse-battery" }),
  });
  let { refresh_token } = await r.json();
  const times = [];
  for (let i = 0; i < RUNS; i++) {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    await ctx.addInitScript((t) => {
      if (!sessionStorage.getItem("seeded")) {
        localStorage.setItem("jarvis.refresh_token", t);
        sessionStorage.setItem("seeded", "1");
      }
    }, refresh_token);
    const page = await ctx.newPage();
    await page.goto(`${router.url}/chat`, { waitUntil: "commit" });
    await page.waitForFunction(() => {
      const input = document.querySelector('[data-testid="chat-input"]');
      return input && !input.disabled && document.body.innerText.includes("No conversations yet.");
    }, null, { polling: "raf", timeout: 30_000 });
    const tti = await page.evaluate(() => performance.now());
    const paint = await page.evaluate(() => performance.getEntriesByName("first-contentful-paint")[0]?.startTime ?? null);
    // The refresh token rotated: carry the new one to the next load.
    refresh_token = await page.evaluate(() => localStorage.getItem("jarvis.refresh_token"));
    times.push(tti);
    console.log(`  load ${i + 1}: interactive at ${tti.toFixed(0)} ms (first contentful paint ${paint?.toFixed(0) ?? "?"} ms)`);
    await ctx.close();
  }
  times.sort((a, b) => a - b);
  console.log(`chat page time to interactive: median ${times[Math.floor(times.length / 2)].toFixed(0)} ms, min ${times[0].toFixed(0)} ms, max ${times[times.length - 1].toFixed(0)} ms (${RUNS} cold loads, localhost)`);
} finally {
  await browser.close();
  await router.stop();
}
