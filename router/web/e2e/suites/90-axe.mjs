// Accessibility: axe-core over every page the app has, at 1280 and 390 px: "/",
// sign-in, sign-up, the empty chat, a chat with an answer holding a code block and
// tool cards (opened), documents (list and one open), files and account. Fails on
// any serious or critical violation and prints each one (rule, impact, elements).
import assert from "node:assert/strict";
import fs from "node:fs";
import { createRequire } from "node:module";
import { buildBinaries, launchBrowser, startFakeModel, startRouter } from "../lib.mjs";

const AXE = fs.readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const WIDTHS = [
  ["desktop", { width: 1280, height: 800 }],
  ["phone", { width: 390, height: 844 }],
];
const started = Date.now();
const step = (s) => console.log(`e2e axe: ${((Date.now() - started) / 1000).toFixed(1)}s ${s}`);

/** The serious and critical violations on the page as it is now. */
async function audit(page) {
  // The router's CSP forbids inline scripts; these contexts bypass it for the injection.
  if (!(await page.evaluate(() => typeof window.axe !== "undefined"))) await page.addScriptTag({ content: AXE });
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  return result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
}

buildBinaries();
const model = await startFakeModel();
const router = await startRouter({ log: !!process.env.E2E_LOG, modelUrl: model.url });
const browser = await launchBrowser();
let failed = false;
const found = [];
try {
  async function check(page, name) {
    await page.waitForLoadState("networkidle").catch(() => {});
    for (const v of await audit(page)) {
      found.push(`${name}: [${v.impact}] ${v.id}: ${v.help}\n${v.nodes
        .slice(0, 5)
        .map((n) => `    ${n.target.join(" ")}\n      ${(n.failureSummary ?? "").replace(/\n/g, "\n      ")}`)
        .join("\n")}`);
    }
  }

  // Signed out: "/", sign-in, sign-up.
  for (const [w, viewport] of WIDTHS) {
    const ctx = await browser.newContext({ viewport, bypassCSP: true });
    const page = await ctx.newPage();
    await page.goto(router.url + "/");
    await page.waitForURL(/\/(signin|signup)?$/);
    await page.locator("h1, main").first().waitFor();
    await check(page, `/ → ${new URL(page.url()).pathname} (${w})`);
    await page.goto(router.url + "/signin");
    await page.getByLabel("Email").waitFor();
    await check(page, `sign-in (${w})`);
    await page.goto(router.url + "/signup");
    await page.getByLabel("Email").waitFor();
    await check(page, `sign-up (${w})`);
    await ctx.close();
  }
  step("signed-out pages audited");

  // Signed in: sign up, then every page.
  const ctx = await browser.newContext({ viewport: WIDTHS[0][1], bypassCSP: true });
  const page = await ctx.newPage();
  await page.goto(router.url + "/signup");
  await page.getByLabel("Email").fill(`axe-${Date.now()}@example.com`);
  await page.getByLabel("Password").fill("correct-horse-battery");
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.waitForURL("**/chat");
  await page.getByTestId("empty-chat").waitFor();
  await page.getByTestId("connection-status").filter({ hasText: "Workspace ready" }).waitFor({ timeout: 90_000 });
  await check(page, "chat, empty (desktop)");
  await model.push(
    { tool_use: { id: "toolu_axe_w", name: "Write", input: { file_path: "/workspace/hello.sh", content: "#!/bin/sh\necho hello\n" } } },
    { tool_use: { id: "toolu_axe_e", name: "Edit", input: { file_path: "/workspace/hello.sh", old_string: "echo hello\n", new_string: "echo hello, world\n" } } },
    { tool_use: { id: "toolu_axe_d", name: "mcp__jarvis__save_document", input: { filename: "axe-notes.md", content: "# Notes\n\nChecked by **axe**.", type: "markdown" } } },
    { text: ["Done:\n\n```sh\nsh hello.sh\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |"] },
  );
  await page.getByTestId("chat-input").fill("Write a script");
  await page.getByTestId("chat-input").press("Enter");
  const answer = page.getByTestId("assistant-message").last();
  await answer.getByTestId("code-block").waitFor({ timeout: 90_000 });
  await answer.getByRole("button", { name: "Copy answer" }).waitFor();
  const chatUrl = page.url();
  for (const card of await answer.getByTestId("tool").all()) await card.getByRole("button").first().click();
  await answer.getByRole("button", { name: /Show the content of hello\.sh/ }).click();
  await answer.getByTestId("tool-diff").waitFor();
  step("chat answered with code and tool cards");

  for (const [w, viewport] of WIDTHS) {
    await page.setViewportSize(viewport);
    if (w === "phone") {
      await page.goto(chatUrl);
      await page.getByTestId("assistant-message").last().getByTestId("code-block").waitFor({ timeout: 30_000 });
      for (const card of await page.getByTestId("tool").all()) await card.getByRole("button").first().click();
    }
    await check(page, `chat with an answer (${w})`);
    await page.goto(router.url + "/chat");
    await page.getByTestId("chat-input").waitFor();
    await check(page, `chat, new (${w})`);
    await page.goto(router.url + "/documents");
    await page.getByRole("link", { name: /axe-notes\.md/ }).first().waitFor();
    await check(page, `documents (${w})`);
    await page.getByRole("link", { name: /axe-notes\.md/ }).first().click();
    await page.getByRole("heading", { name: "Notes" }).first().waitFor();
    await check(page, `a document (${w})`);
    await page.goto(router.url + "/files");
    await page.getByText("hello.sh").first().waitFor({ timeout: 30_000 });
    await check(page, `files (${w})`);
    await page.goto(router.url + "/account");
    await page.getByTestId("account-email").waitFor();
    await check(page, `account (${w})`);
  }
  // The same in the dark theme, at desktop width.
  await page.setViewportSize(WIDTHS[0][1]);
  await page.evaluate(() => localStorage.setItem("jarvis.theme", "dark"));
  for (const [p, ready] of [
    [chatUrl, (pg) => pg.getByTestId("code-block").first().waitFor({ timeout: 30_000 })],
    ["/files", (pg) => pg.getByText("hello.sh").first().waitFor()],
    ["/account", (pg) => pg.getByTestId("account-email").waitFor()],
  ]) {
    await page.goto(p.startsWith("http") ? p : router.url + p);
    await ready(page);
    await check(page, `${new URL(page.url()).pathname} dark (desktop)`);
  }
  step("signed-in pages audited");
  await ctx.close();

  if (found.length > 0) console.error(`e2e axe: ${found.length} serious or critical violation(s):\n${found.join("\n")}`);
  assert.equal(found.length, 0, "no serious or critical accessibility violations");
  console.log(`e2e axe: passed in ${((Date.now() - started) / 1000).toFixed(1)}s`);
} catch (e) {
  failed = true;
  console.error("e2e axe: FAILED:", e.message ?? e);
} finally {
  await browser.close();
  await router.stop();
  model.stop();
}
process.exit(failed ? 1 : 0);
