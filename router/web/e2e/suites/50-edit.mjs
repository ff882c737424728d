// End-to-end: what a user changes after the fact. Regenerate replaces the last
// answer (the old text goes, the new one streams, a reload shows only the new
// turn); editing the first or a middle message of a three-turn conversation drops
// the later turns, the model is shown the edited text and not the dropped turns,
// and the next message goes on from the edited branch (the fake model's `echo`
// reply says what it was shown); Escape cancels an edit; while a turn runs both
// are disabled; a message queued behind the plan's turn limit is still waiting
// (and cancellable) after a reload, then goes; an answer the user stopped keeps
// its text with a "Stopped" note, live and after a reload; a PDF attachment opens
// in the side pane as its pages. Real router, real sandboxes (the real CLI), the
// fake model API, headless Chromium; axe-core over the new states. Screenshots at
// both widths go to e2e/screenshots/.
import assert from "node:assert/strict";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { buildBinaries, DESKTOP, launchBrowser, PASSWORD, PHONE, psql, SHOTS, startFakeModel, startRouter, stepper } from "../lib.mjs";

const started = Date.now();
const step = stepper("edit");
const AXE = fs.readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

/** A small PDF: one page per text, each with a coloured bar and its text in Helvetica. */
function pdf(texts) {
  const objects = [];
  objects[1] = "<< /Type /Catalog /Pages 2 0 R >>";
  objects[2] = `<< /Type /Pages /Kids [${texts.map((_, i) => `${4 + 2 * i} 0 R`).join(" ")}] /Count ${texts.length} >>`;
  objects[3] = "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>";
  texts.forEach((text, i) => {
    const content = `0.15 0.35 0.8 rg 72 620 400 60 re f BT /F1 28 Tf 0 0 0 rg 72 700 Td (${text}) Tj ET`;
    objects[4 + 2 * i] =
      `<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents ${5 + 2 * i} 0 R >>`;
    objects[5 + 2 * i] = `<< /Length ${content.length} >>\nstream\n${content}\nendstream`;
  });
  let out = "%PDF-1.4\n";
  const offsets = [];
  for (let k = 1; k < objects.length; k++) {
    offsets[k] = Buffer.byteLength(out, "latin1");
    out += `${k} 0 obj\n${objects[k]}\nendobj\n`;
  }
  const xref = Buffer.byteLength(out, "latin1");
  out += `xref\n0 ${objects.length}\n0000000000 65535 f \n`;
  for (let k = 1; k < objects.length; k++) out += `${String(offsets[k]).padStart(10, "0")} 00000 n \n`;
  out += `trailer\n<< /Size ${objects.length} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(out, "latin1");
}

buildBinaries();
const model = await startFakeModel();
const router = await startRouter({ log: !!process.env.E2E_LOG, modelUrl: model.url });
step(`router at ${router.url}`);
const browser = await launchBrowser();
let failed = false;
try {
  const ctx = await browser.newContext({ viewport: DESKTOP });
  const page = await ctx.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  // The router's Content-Security-Policy must not block anything (PDF.js's worker included).
  page.on("console", (m) => {
    if (m.type() === "error" && m.text().includes("Content Security Policy")) pageErrors.push(m.text());
  });
  // Every message frame the page sends.
  const sent = [];
  page.on("websocket", (ws) =>
    ws.on("framesent", (f) => {
      try {
        const frame = JSON.parse(String(f.payload));
        if (frame.type === "message") sent.push(frame);
      } catch {
        /* not JSON */
      }
    }),
  );
  const shot = async (name) => {
    await page.screenshot({ path: path.join(SHOTS, `${name}-desktop.png`) });
    await page.setViewportSize(PHONE);
    await page.screenshot({ path: path.join(SHOTS, `${name}-phone.png`) });
    await page.setViewportSize(DESKTOP);
  };
  /** Serious and critical axe violations on the page as it is now. */
  const axe = async (name) => {
    if (!(await page.evaluate(() => typeof window.axe !== "undefined"))) await page.evaluate(AXE);
    const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
    const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
    assert.deepEqual(
      bad.map((v) => `${name}: [${v.impact}] ${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`),
      [],
      "no serious or critical accessibility violations",
    );
  };
  const input = page.getByTestId("chat-input");
  const composer = page.locator("form").filter({ has: input });
  const idle = () => composer.getByRole("button", { name: "Send", exact: true }).waitFor({ timeout: 90_000 });
  const send = async (text) => {
    await input.fill(text);
    await input.press("Enter");
  };
  const users = () => page.getByTestId("user-message");
  const answers = () => page.getByTestId("assistant-message");
  const lastAnswer = () => answers().last();
  const userTexts = async () => (await users().allInnerTexts()).map((t) => t.trim());
  const answerTexts = async () => (await answers().allInnerTexts()).map((t) => t.replace(/\s+/g, " ").trim());
  const conversationId = () => new URL(page.url()).pathname.split("/").pop();
  const editForm = page.getByRole("form", { name: "Edit message" });
  /** The Edit button of the user message whose text is exactly `text`. */
  const editButton = (text) =>
    page.getByTestId("editable-message").filter({ has: page.getByText(text, { exact: true }) }).getByRole("button", { name: "Edit message" });
  /** Edits the user message showing `text` into `next` and sends it. */
  const edit = async (text, next) => {
    await editButton(text).click();
    const box = editForm.getByRole("textbox", { name: "Edit message" });
    assert.equal(await box.inputValue(), text);
    await box.fill(next);
    await editForm.getByRole("button", { name: "Send" }).click();
  };
  const storedId = (conversation, content) =>
    psql(router.dbUrl, `select id from messages where conversation_id = '${conversation}' and role = 'user' and content = '${content}' order by position desc limit 1`);

  // --- sign up (free plan: one answer at a time) --------------------------------
  await page.goto(router.url + "/signup");
  await page.getByLabel("Email").fill(`edit-${Date.now()}@example.com`);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.waitForURL("**/chat");
  await page.getByTestId("connection-status").filter({ hasText: "Workspace ready" }).waitFor({ timeout: 90_000 });
  step("signed up, workspace awake");

  // --- regenerate ------------------------------------------------------------------
  await model.push({ text: ["The old answer."] });
  await send("Tell me something");
  await lastAnswer().getByText("The old answer.").waitFor({ timeout: 90_000 });
  await idle();
  await page.waitForURL(/\/chat\/[0-9a-f-]{36}$/);
  const first = conversationId();
  const question = storedId(first, "Tell me something");
  await model.push({ text: ["A fresh ", "answer, ", "streamed ", "again."], delay_ms: 300 });
  sent.length = 0;
  await lastAnswer().getByRole("button", { name: "Regenerate answer" }).click();
  // The old answer is gone at once; the new one streams in its place.
  await page.getByRole("button", { name: "Stop", exact: true }).waitFor();
  assert.equal(await page.getByText("The old answer.").count(), 0, "the old answer is gone");
  await lastAnswer().getByText("A fresh").waitFor({ timeout: 60_000 });
  assert.ok(!(await lastAnswer().innerText()).includes("again."), "it streams");
  await lastAnswer().getByText("A fresh answer, streamed again.").waitFor({ timeout: 60_000 });
  await idle();
  assert.deepEqual(sent, [{ type: "message", conversation_id: first, content: "Tell me something", voice: false, replaces: question }]);
  assert.deepEqual(await userTexts(), ["Tell me something"]);
  assert.deepEqual(await answerTexts(), ["A fresh answer, streamed again."]);
  await page.reload();
  await lastAnswer().getByText("A fresh answer, streamed again.").waitFor();
  assert.deepEqual(await userTexts(), ["Tell me something"]);
  assert.deepEqual(await answerTexts(), ["A fresh answer, streamed again."]);
  await shot("edit-regenerated");
  step("regenerate: the old answer went, the new one streamed in its place, and a reload shows only it");

  // --- three turns; edit the middle one -----------------------------------------------
  await page.getByRole("button", { name: "New conversation" }).click();
  await page.getByTestId("empty-chat").waitFor();
  for (const [text, heard] of [
    ["alpha", "Heard: alpha"],
    ["bravo", "Heard: alpha | bravo"],
    ["charlie", "Heard: alpha | bravo | charlie"],
  ]) {
    await model.push({ echo: true });
    await send(text);
    await lastAnswer().getByText(heard).waitFor({ timeout: 90_000 });
    await idle();
  }
  const three = conversationId();
  step("three turns; the fake model heard each one after the ones before");

  // Escape cancels an edit: nothing sent, nothing changed.
  await editButton("bravo").click();
  await editForm.getByRole("textbox", { name: "Edit message" }).fill("never sent");
  await shot("edit-form");
  await axe("an edit open");
  sent.length = 0;
  await editForm.getByRole("textbox", { name: "Edit message" }).press("Escape");
  await editForm.waitFor({ state: "detached" });
  assert.deepEqual(sent, []);
  assert.deepEqual(await userTexts(), ["alpha", "bravo", "charlie"]);
  step("Escape cancelled an edit");

  const bravo = storedId(three, "bravo");
  await model.push({ echo: true });
  sent.length = 0;
  await edit("bravo", "bravo, edited");
  await lastAnswer().getByText("Heard: alpha | bravo, edited").waitFor({ timeout: 90_000 });
  await idle();
  assert.deepEqual(sent, [{ type: "message", conversation_id: three, content: "bravo, edited", voice: false, replaces: bravo }]);
  assert.deepEqual(await userTexts(), ["alpha", "bravo, edited"]);
  assert.deepEqual(await answerTexts(), ["Heard: alpha", "Heard: alpha | bravo, edited"]);
  // The next message goes on from the edited branch: charlie is forgotten.
  await model.push({ echo: true });
  await send("delta");
  await lastAnswer().getByText("Heard: alpha | bravo, edited | delta").waitFor({ timeout: 90_000 });
  await idle();
  await page.reload();
  await lastAnswer().getByText("Heard: alpha | bravo, edited | delta").waitFor();
  assert.deepEqual(await userTexts(), ["alpha", "bravo, edited", "delta"]);
  assert.equal(await page.getByText("charlie").count(), 0);
  step("edited the middle message: later turns gone, the model saw the edit and not them, the next message followed on");

  // --- edit the first message -----------------------------------------------------------
  await model.push({ echo: true });
  await edit("alpha", "alpha, rewritten");
  await lastAnswer().getByText("Heard: alpha, rewritten").waitFor({ timeout: 90_000 });
  await idle();
  assert.deepEqual(await userTexts(), ["alpha, rewritten"]);
  assert.deepEqual(await answerTexts(), ["Heard: alpha, rewritten"]);
  await model.push({ echo: true });
  await send("echo");
  await lastAnswer().getByText("Heard: alpha, rewritten | echo").waitFor({ timeout: 90_000 });
  await idle();
  await page.reload();
  await lastAnswer().getByText("Heard: alpha, rewritten | echo").waitFor();
  assert.deepEqual(await userTexts(), ["alpha, rewritten", "echo"]);
  step("edited the first message: only it and its answer remain; the next message followed on");

  // --- stopped: disabled edits while it runs, the note after -------------------------------
  await model.push({ text: Array.from({ length: 40 }, (_, i) => `Part ${i + 1}. `), delay_ms: 250 });
  await send("Say a lot");
  await lastAnswer().getByText("Part 2.", { exact: false }).waitFor({ timeout: 90_000 });
  for (const b of await page.getByRole("button", { name: "Edit message" }).all()) assert.ok(await b.isDisabled(), "Edit is disabled while a turn runs");
  assert.equal(await page.getByRole("button", { name: "Regenerate answer" }).count(), 0, "no Regenerate on a running answer");
  await page.getByRole("button", { name: "Stop", exact: true }).click();
  await lastAnswer().getByTestId("stopped-note").waitFor({ timeout: 30_000 });
  await idle();
  assert.match(await lastAnswer().innerText(), /Part 1\. Part 2\./);
  assert.ok(!(await lastAnswer().innerText()).includes("Part 40."), "it was stopped before its end");
  assert.ok(await lastAnswer().getByRole("button", { name: "Regenerate answer" }).isEnabled());
  await shot("edit-stopped");
  await page.reload();
  await lastAnswer().getByTestId("stopped-note").waitFor();
  assert.match(await lastAnswer().innerText(), /Part 1\. Part 2\./);
  step("an answer stopped after some text keeps it, with a Stopped note, live and after a reload");

  // --- queued behind the turn limit, across a reload ------------------------------------------
  await model.push({ text: Array.from({ length: 60 }, (_, i) => `[${i + 1}] `), delay_ms: 250 }, { text: ["The queued one, answered."] });
  await send("Count for a while");
  await lastAnswer().getByText("[2]", { exact: false }).waitFor({ timeout: 90_000 });
  await page.locator(`a[href="/chat/${first}"]`).first().click();
  await page.waitForURL(`**/chat/${first}`);
  await lastAnswer().getByText("A fresh answer, streamed again.").waitFor();
  await idle();
  await send("Waiting question");
  const queued = page.getByTestId("queued-note");
  await queued.getByText("Waiting: sends when the other answer ends").waitFor({ timeout: 30_000 });
  await page.reload();
  await queued.getByText("Waiting: sends when the other answer ends").waitFor({ timeout: 30_000 });
  assert.ok(await queued.getByRole("button", { name: "Cancel" }).isVisible(), "still cancellable");
  assert.ok(await queued.getByRole("button", { name: "Stop it and send" }).isVisible());
  assert.equal(await users().filter({ hasText: "Waiting question" }).count(), 1);
  await shot("edit-queued-reloaded");
  await lastAnswer().getByText("The queued one, answered.").waitFor({ timeout: 90_000 });
  assert.equal(await queued.count(), 0);
  assert.deepEqual(await userTexts(), ["Tell me something", "Waiting question"]);
  step("a queued message was still waiting after a reload, then went when the other answer ended");

  // --- a PDF opens in the side pane -------------------------------------------------------------
  await page.getByRole("button", { name: "New conversation" }).click();
  await page.getByTestId("empty-chat").waitFor();
  await page.getByTestId("file-input").setInputFiles({ name: "report.pdf", mimeType: "application/pdf", buffer: pdf(["Quarterly report", "Second page"]) });
  const pending = page.getByTestId("pending-attachments");
  await pending.getByLabel("Uploading report.pdf").waitFor({ state: "detached", timeout: 30_000 });
  await model.push({ text: ["Got the report."] });
  await send("Here is the report");
  await lastAnswer().getByText("Got the report.").waitFor({ timeout: 90_000 });
  await idle();
  await users().last().getByRole("button", { name: "Open report.pdf" }).click();
  const pane = page.getByTestId("side-pane");
  await pane.getByRole("region", { name: "report.pdf, 2 pages" }).waitFor({ timeout: 30_000 });
  await pane.locator("canvas[data-drawn=true]").nth(1).waitFor({ timeout: 30_000 });
  assert.deepEqual(await pane.getByRole("img").evaluateAll((els) => els.map((e) => e.getAttribute("aria-label"))), ["Page 1 of 2", "Page 2 of 2"]);
  // Drawn: the blue bar is there, and the page's text is read out.
  const colours = await pane.locator("canvas").first().evaluate((c) => {
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let blue = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 150 && d[i] < 100) blue++;
    return { blue, width: c.width };
  });
  assert.ok(colours.blue > 1000 && colours.width > 300, JSON.stringify(colours));
  await pane.getByText("Page 1: Quarterly report").waitFor({ state: "attached" });
  await axe("a PDF in the pane");
  await pane.getByRole("img", { name: "Page 1 of 2" }).waitFor();
  await page.screenshot({ path: path.join(SHOTS, "edit-pdf-pane-desktop.png") });
  await page.setViewportSize(PHONE);
  await pane.locator("canvas[data-drawn=true]").first().waitFor();
  await page.screenshot({ path: path.join(SHOTS, "edit-pdf-pane-phone.png") });
  await page.setViewportSize(DESKTOP);
  step("a PDF attachment opened in the side pane as its two pages");

  // Touch targets at phone width: Edit and Regenerate are 44 px.
  await page.locator(`a[href="/chat/${first}"]`).first().click();
  await page.waitForURL(`**/chat/${first}`);
  await idle();
  await page.setViewportSize(PHONE);
  for (const name of ["Edit message", "Regenerate answer"]) {
    const button = page.getByRole("button", { name }).last();
    // Measured once laid out at the new width (null while the history renders).
    await button.waitFor({ state: "visible" });
    const box = await button.boundingBox();
    assert.ok(box && box.height >= 44 && box.width >= 44, `${name}: ${JSON.stringify(box)}`);
  }
  await page.setViewportSize(DESKTOP);
  step("Edit and Regenerate are 44 px touch targets on a phone");

  assert.deepEqual(pageErrors, [], "no uncaught page errors or CSP violations");
  await ctx.close();
  console.log(`e2e edit: passed in ${((Date.now() - started) / 1000).toFixed(1)}s; screenshots in ${SHOTS}`);
} catch (e) {
  failed = true;
  console.error("e2e edit: FAILED:", e);
  if (process.env.E2E_DEBUG) {
    for (const p of browser.contexts().flatMap((c) => c.pages())) {
      await p.screenshot({ path: path.join(SHOTS, "edit-failed.png") }).catch(() => {});
      console.error(await p.locator("body").innerText().catch(() => ""));
    }
  }
} finally {
  await browser.close();
  await router.stop();
  model.stop();
}
process.exit(failed ? 1 : 0);
