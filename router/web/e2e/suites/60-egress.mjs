// End-to-end: the egress prompt card. The agent's curl (its Bash tool, scripted by
// the fake model, in a real local sandbox) asks for a host outside the lists; the
// card appears above the message box naming the host; "Allow once" lets that
// request through and the answer's tool card shows the page; the next request asks
// again, and "Deny" gets the proxy's refusal, which the tool card shows. The host
// is a stand-in on 127.0.0.2 (a loopback address the sandbox's NO_PROXY does not
// name; the router's deny-list is narrowed to let loopback through). Screenshots of
// the card at both widths go to e2e/screenshots/.
import assert from "node:assert/strict";
import http from "node:http";
import path from "node:path";
import { buildBinaries, DESKTOP, launchBrowser, PASSWORD, PHONE, SHOTS, startFakeModel, startRouter, stepper } from "../lib.mjs";

const started = Date.now();
const step = stepper("egress");

/** The default deny-list without loopback. */
const NARROWED_DENY = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,0.0.0.0/8,100.64.0.0/10,fc00::/7,fe80::/10";

// The stand-in for a host of the internet: counts what reaches it.
const reached = [];
const standIn = http.createServer((req, res) => {
  reached.push(req.url);
  res.end(`hello from the stand-in at ${req.url}\n`);
});
await new Promise((resolve) => standIn.listen(0, "127.0.0.2", resolve));
const target = `127.0.0.2:${standIn.address().port}`;

buildBinaries();
const model = await startFakeModel();
const router = await startRouter({
  log: !!process.env.E2E_LOG,
  modelUrl: model.url,
  env: { JARVIS_EGRESS_DENY: NARROWED_DENY },
});
step(`router at ${router.url}, stand-in at ${target}`);
const browser = await launchBrowser();
let failed = false;
try {
  const ctx = await browser.newContext({ viewport: DESKTOP });
  const page = await ctx.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  const input = page.getByTestId("chat-input");
  const send = async (text) => {
    await input.fill(text);
    await input.press("Enter");
  };
  const lastAnswer = () => page.getByTestId("assistant-message").last();
  const card = page.getByTestId("egress-prompt");
  /** The agent runs `command` with its Bash tool, then says `done`. */
  const curl = (id, command, done) =>
    model.push({ tool_use: { id, name: "Bash", input: { command, description: "fetch a page" } } }, { text: [done] });

  await page.goto(router.url + "/signin");
  await page.getByRole("link", { name: "Create an account" }).click();
  await page.getByLabel("Email").fill(`egress-${Date.now()}@example.com`);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.waitForURL("**/chat");
  await page.getByTestId("connection-status").filter({ hasText: "Workspace ready" }).waitFor({ timeout: 90_000 });
  step("signed up, workspace awake");

  // --- allow once ---------------------------------------------------------------
  await curl("toolu_e2e_once", `curl -sS http://${target}/once`, "Fetched it.");
  await send("Fetch the page");
  await card.waitFor({ timeout: 60_000 });
  await card.getByText(target).waitFor();
  assert.equal(reached.length, 0, "nothing reached the host before the answer");
  await page.screenshot({ path: path.join(SHOTS, "egress-prompt-desktop.png") });
  await page.setViewportSize(PHONE);
  await page.screenshot({ path: path.join(SHOTS, "egress-prompt-phone.png") });
  await page.setViewportSize(DESKTOP);
  // Focus is on "Allow once": the agent waits on the question.
  const allow = card.getByRole("button", { name: `Allow ${target} once` });
  assert.ok(await allow.evaluate((el) => el === document.activeElement), "focus on Allow once");
  await allow.click();
  await card.waitFor({ state: "detached" });
  await lastAnswer().getByText("Fetched it.").waitFor({ timeout: 90_000 });
  const once = lastAnswer().getByTestId("tool").filter({ hasText: "curl" });
  await once.getByRole("button").first().click();
  await once.getByText("hello from the stand-in at /once").first().waitFor();
  assert.deepEqual(reached, ["/once"]);
  step("the card named the host; Allow once let the request through and the answer shows the page");

  // --- deny: once was once, so the next request asks again ---------------------------
  await page.getByRole("button", { name: "Send" }).waitFor();
  await curl("toolu_e2e_deny", `curl -sS http://${target}/denied`, "It was refused.");
  await send("Fetch it again");
  await card.waitFor({ timeout: 60_000 });
  await card.getByText(target).waitFor();
  await card.getByRole("button", { name: `Deny ${target}` }).click();
  await card.waitFor({ state: "detached" });
  await lastAnswer().getByText("It was refused.").waitFor({ timeout: 90_000 });
  const denied = lastAnswer().getByTestId("tool").filter({ hasText: "curl" });
  await denied.getByRole("button").first().click();
  await denied.getByText(`Jarvis egress: refused to ${target} (denied_by_workspace)`, { exact: false }).first().waitFor();
  assert.deepEqual(reached, ["/once"], "the denied request never reached the host");
  step("Deny refused the request and the tool card shows the proxy's refusal");

  assert.deepEqual(pageErrors, [], "no uncaught page errors");
  await ctx.close();
  console.log(`e2e egress: passed in ${((Date.now() - started) / 1000).toFixed(1)}s`);
} catch (e) {
  failed = true;
  console.error("e2e egress: FAILED:", e);
  if (process.env.E2E_DEBUG) {
    for (const p of browser.contexts().flatMap((c) => c.pages())) {
      await p.screenshot({ path: path.join(SHOTS, "egress-failed.png") }).catch(() => {});
      console.error(await p.locator("body").innerText().catch(() => ""));
    }
  }
} finally {
  await browser.close();
  await router.stop();
  model.stop();
  standIn.close();
}
process.exit(failed ? 1 : 0);
