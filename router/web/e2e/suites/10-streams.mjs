// End-to-end: chat streams of several conversations never mix, a reload mid-answer
// resumes exactly where the page was, the free plan's one-answer-at-a-time limit
// queues a message instead of showing the server's refusal, an answer stopped
// before its first word is a "Stopped" note, a reopened conversation shows text
// and tool cards in the order they streamed, and an answer that failed can be
// asked again with one click. Real router, real sandboxes (the real CLI), the fake
// model API, headless Chromium. Screenshots of the queued state and of a resumed
// answer at both widths go to e2e/screenshots/.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { buildBinaries, DESKTOP, launchBrowser, PHONE, psql, SHOTS, startFakeModel, startRouter, stepper } from "../lib.mjs";

const started = Date.now();
const step = stepper("streams");

/** A slow answer numbered [001] … [n], one chunk every `ms`. */
const numbered = (n, ms) => ({
  text: Array.from({ length: n }, (_, i) => `[${String(i + 1).padStart(3, "0")}] `),
  delay_ms: ms,
});
/** The numbers in `text`, in order. */
const numbersIn = (text) => [...text.matchAll(/\[(\d{3})\]/g)].map((m) => Number(m[1]));
const oneToN = (n) => Array.from({ length: n }, (_, i) => i + 1);

buildBinaries();
const model = await startFakeModel();
const router = await startRouter({ log: !!process.env.E2E_LOG, modelUrl: model.url });
step(`router at ${router.url}`);
const browser = await launchBrowser();
let failed = false;
try {
  const ctx = await browser.newContext({ viewport: DESKTOP });
  const page = await ctx.newPage();
  if (process.env.E2E_DEBUG) {
    page.on("websocket", (ws) => {
      ws.on("framereceived", (f) => console.log("<<", String(f.payload).slice(0, 160)));
      ws.on("framesent", (f) => console.log(">>", String(f.payload).slice(0, 160)));
    });
  }
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  const shot = async (name) => {
    await page.screenshot({ path: path.join(SHOTS, `${name}-desktop.png`) });
    await page.setViewportSize(PHONE);
    await page.screenshot({ path: path.join(SHOTS, `${name}-phone.png`) });
    await page.setViewportSize(DESKTOP);
  };
  const input = page.getByTestId("chat-input");
  const send = async (text) => {
    await input.fill(text);
    await input.press("Enter");
  };
  const lastAnswer = () => page.getByTestId("assistant-message").last();
  const conversationId = () => new URL(page.url()).pathname.split("/").pop();
  const chatLog = () => page.getByRole("region", { name: "Chat" }).locator("[aria-live=polite][aria-busy]");

  // --- sign up (free plan: one answer at a time) --------------------------------
  await page.goto(router.url + "/signin");
  await page.getByRole("link", { name: "Create an account" }).click();
  await page.getByLabel("Email").fill(`streams-${Date.now()}@example.com`);
  await page.getByLabel("Password").fill("correct-horse-battery");
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.waitForURL("**/chat");
  await page.getByTestId("connection-status").filter({ hasText: "Workspace ready" }).waitFor({ timeout: 90_000 });
  step("signed up, workspace awake");

  // --- conversation B, with a tool call: its history order is checked later ------
  await model.push(
    { tool_use: { id: "toolu_streams_ls", name: "Bash", input: { command: "echo tool-ran", description: "run it" } } },
    { text: ["B's final ", "answer."] },
  );
  await send("Conversation B question");
  await lastAnswer().getByText("B's final answer.").waitFor({ timeout: 90_000 });
  await page.getByRole("button", { name: "Send" }).waitFor();
  await page.waitForURL(/\/chat\/[0-9a-f-]{36}$/);
  const b = conversationId();
  step("conversation B answered (a tool call, then text)");

  // --- history order: reopened, text and tool cards in the live order -------------
  const order = async () =>
    lastAnswer().evaluate((el) => {
      const tool = el.querySelector("[data-testid=tool]");
      const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
      let text = null;
      while (!text && walker.nextNode()) if (walker.currentNode.textContent.includes("final answer")) text = walker.currentNode;
      if (!tool || !text) return "missing";
      return tool.compareDocumentPosition(text) & Node.DOCUMENT_POSITION_FOLLOWING ? "tool, then text" : "text, then tool";
    });
  assert.equal(await order(), "tool, then text", "live order");
  await page.reload();
  await lastAnswer().getByText("B's final answer.").waitFor();
  assert.equal(await order(), "tool, then text", "a reopened conversation keeps the live order");
  step("reopened conversation shows the tool card above the final text, as live");

  // --- cross-conversation: A streams while B is open --------------------------------
  await page.getByRole("button", { name: "New conversation" }).click();
  await page.getByTestId("empty-chat").waitFor();
  await model.push(numbered(80, 90), { text: ["B's second ", "answer, after A."] });
  await send("Conversation A: count to 80");
  await lastAnswer().getByText("[005]").waitFor({ timeout: 90_000 });
  await page.waitForURL(/\/chat\/[0-9a-f-]{36}$/);
  const a = conversationId();
  assert.notEqual(a, b);
  // Open B (in the app, no reload) while A streams: none of A's text shows in B.
  await page.locator(`a[href="/chat/${b}"]`).first().click();
  await page.waitForURL(`**/chat/${b}`);
  await lastAnswer().getByText("B's final answer.").waitFor();
  await page.waitForTimeout(1000);
  assert.deepEqual(numbersIn(await chatLog().innerText()), [], "B shows none of A's answer");
  await page.getByRole("button", { name: "Send" }).waitFor();
  // Send in B while A runs: queued, not refused with the server's text.
  await send("Conversation B, second question");
  const queued = page.getByTestId("queued-note");
  await queued.getByText("Waiting: sends when the other answer ends").waitFor({ timeout: 30_000 });
  await queued.getByRole("button", { name: "Stop it and send" }).waitFor();
  await queued.getByRole("button", { name: "Cancel" }).waitFor();
  const pageText = await page.locator("body").innerText();
  assert.ok(!/answers? at a time/.test(pageText), "no raw refusal text");
  assert.deepEqual(numbersIn(await chatLog().innerText()), [], "still none of A's answer in B");
  await shot("streams-queued");
  step("B shows none of A; B's message is queued while A runs");
  // When A ends, B's message goes and is answered.
  await lastAnswer().getByText("B's second answer, after A.").waitFor({ timeout: 60_000 });
  assert.equal(await queued.count(), 0);
  assert.deepEqual(numbersIn(await chatLog().innerText()), [], "B never showed A's answer");
  // A's page shows all of A's answer, once, in order.
  await page.locator(`a[href="/chat/${a}"]`).first().click();
  await page.waitForURL(`**/chat/${a}`);
  await lastAnswer().getByText("[080]").waitFor();
  assert.deepEqual(numbersIn(await lastAnswer().innerText()), oneToN(80));
  step("when A ended, B's queued message was sent and answered; A shows all of its answer");

  // --- "Stop it and send" -----------------------------------------------------------
  await model.push(numbered(200, 100), { text: ["Sent after stopping A."] });
  const answersBefore = await page.getByTestId("assistant-message").count();
  await send("Count to 200");
  await page.getByTestId("assistant-message").nth(answersBefore).getByText("[003]").waitFor({ timeout: 60_000 });
  await page.locator(`a[href="/chat/${b}"]`).first().click();
  await page.waitForURL(`**/chat/${b}`);
  await send("Stop the other one");
  await queued.getByRole("button", { name: "Stop it and send" }).click({ timeout: 30_000 });
  await lastAnswer().getByText("Sent after stopping A.").waitFor({ timeout: 60_000 });
  step("'Stop it and send' stopped A and sent B's message");

  // --- reload mid-answer: no gap, no repeat, Stop shown, not "cut off" ---------------
  await page.getByRole("button", { name: "New conversation" }).click();
  await page.getByTestId("empty-chat").waitFor();
  const N = 120;
  await model.push(numbered(N, 60));
  await send("Count to 120 slowly");
  await lastAnswer().getByText("[030]").waitFor({ timeout: 90_000 });
  await page.waitForURL(/\/chat\/[0-9a-f-]{36}$/);
  const c = conversationId();
  await page.reload();
  await lastAnswer().getByText(/\[0[4-9]\d\]/).first().waitFor({ timeout: 30_000 });
  await page.getByRole("button", { name: "Stop" }).waitFor();
  assert.equal(await page.getByText("cut off").count(), 0, "no false cut-off");
  await shot("streams-resumed");
  await page.getByRole("button", { name: "Send" }).waitFor({ timeout: 60_000 });
  const shown = await lastAnswer().innerText();
  assert.deepEqual(numbersIn(shown), oneToN(N), "every number once, in order");
  assert.equal(await page.getByText("cut off").count(), 0);
  const stored = psql(
    router.dbUrl,
    `select content from messages where conversation_id = '${c}' and role = 'assistant' order by position desc limit 1`,
  );
  assert.deepEqual(numbersIn(stored), oneToN(N));
  assert.equal(stored.replace(/\s+/g, " ").trim(), shown.replace(/\s+/g, " ").trim(), "stored = shown");
  step("reload mid-answer resumed exactly: [001]..[120] once each, Stop while streaming, stored = shown");

  // --- stop before the first word ------------------------------------------------------
  await model.push({ stall_ms: 8000 });
  await send("Never mind");
  // The answer started (its bubble shows), nothing of it yet: Stop.
  await lastAnswer().getByLabel("Jarvis is answering").waitFor({ timeout: 30_000 });
  // (The model has been asked by then: its stalled reply is the one stopped.)
  await page.waitForTimeout(1500);
  await page.getByRole("button", { name: "Stop" }).click();
  await page.getByTestId("stopped-note").last().waitFor({ timeout: 30_000 });
  await page.getByRole("button", { name: "Send" }).waitFor();
  assert.equal(await lastAnswer().getAttribute("data-stopped"), "true", "a note, not an empty bubble");
  assert.equal(await page.getByText("late", { exact: true }).count(), 0);
  const stoppedRow = psql(
    router.dbUrl,
    `select content || '|' || events::text || '|' || complete from messages where conversation_id = '${c}' and role = 'assistant' order by position desc limit 1`,
  );
  // Nothing but the note: stopped at character 0, complete.
  assert.equal(stoppedRow, '|[{"at": 0, "type": "stopped"}]|true');
  await page.reload();
  await lastAnswer().getByTestId("stopped-note").waitFor();
  assert.equal(await page.getByText("cut off").count(), 0);
  step("stopped before the first word: a 'Stopped' note, live and after a reload");

  // --- retry after an error ----------------------------------------------------------
  await model.push({ status: 500 }, { text: ["Second try worked."] });
  await send("Please try this");
  const retry = page.getByRole("button", { name: "Retry" });
  await retry.waitFor({ timeout: 60_000 });
  assert.ok(await lastAnswer().getByRole("alert").isVisible());
  await retry.click();
  await lastAnswer().getByText("Second try worked.").waitFor({ timeout: 60_000 });
  assert.equal(await page.getByTestId("user-message").filter({ hasText: "Please try this" }).count(), 2, "the text was sent again");
  step("an answer that failed was asked again with one click");

  assert.deepEqual(pageErrors, [], "no uncaught page errors");
  await ctx.close();
  console.log(`e2e streams: passed in ${((Date.now() - started) / 1000).toFixed(1)}s`);
} catch (e) {
  failed = true;
  console.error("e2e streams: FAILED:", e);
  if (process.env.E2E_DEBUG) {
    for (const p of browser.contexts().flatMap((c) => c.pages())) {
      await p.screenshot({ path: path.join(SHOTS, "streams-failed.png") }).catch(() => {});
      console.error(await p.locator("body").innerText().catch(() => ""));
    }
  }
} finally {
  await browser.close();
  await router.stop();
  model.stop();
}
process.exit(failed ? 1 : 0);
