// Runs every end-to-end script: run.mjs (the main walk through the product), then
// each suites/*.mjs in name order, each in its own Node process with its own
// router, so one suite's state never leaks into another. Fails when any fails.
// `npm run e2e -- NAME…` runs only the suites whose file name contains a NAME.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { buildBinaries, WEB } from "./lib.mjs";

const only = process.argv.slice(2);
const suites = ["run.mjs", ...fs.readdirSync(path.join(WEB, "e2e/suites")).filter((f) => f.endsWith(".mjs")).sort().map((f) => `suites/${f}`)]
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)));
buildBinaries();
const failed = [];
for (const suite of suites) {
  const started = Date.now();
  console.log(`e2e: ${suite}`);
  const r = spawnSync(process.execPath, [path.join(WEB, "e2e", suite)], {
    stdio: "inherit",
    env: { ...process.env, E2E_NO_BUILD: "1" },
  });
  console.log(`e2e: ${suite} ${r.status === 0 ? "passed" : "FAILED"} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (r.status !== 0) failed.push(suite);
}
if (failed.length > 0) {
  console.error(`e2e: failed: ${failed.join(", ")}`);
  process.exit(1);
}
