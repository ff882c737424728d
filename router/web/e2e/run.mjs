// End-to-end: the built app served by the real router, real local sandboxes (the
// real Claude Code CLI under bubblewrap) and the fake model API, driven in headless
// Chromium. Sign up; chat: the workspace wakes, an answer streams, a tool runs in
// the sandbox, the agent saves a document that shows up in another tab without a
// reload; a connection dropped mid-answer resumes without duplicates; a file
// dropped on the chat is uploaded, attached and read by the agent; a spoken answer
// plays and its audio decodes; documents: view, search, edit + save, download; a
// second user sees none of it; account page; sign out. Screenshots of chat, documents and account at desktop and phone widths
// go to e2e/screenshots/.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { buildBinaries, launchBrowser, psql, startFakeModel, startRouter, WEB } from "./lib.mjs";

const SHOTS = path.join(WEB, "e2e/screenshots");
fs.mkdirSync(SHOTS, { recursive: true });
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const PASSWORD = "correct-horse-battery";
const started = Date.now();
const step = (s) => console.log(`e2e: ${((Date.now() - started) / 1000).toFixed(1)}s ${s}`);

buildBinaries();
const model = await startFakeModel();
// A small upload limit, so the run can show what an oversize file gets.
const MAX_UPLOAD = 4 * 1024 * 1024;
const router = await startRouter({ log: !!process.env.E2E_LOG, modelUrl: model.url, env: { JARVIS_MAX_UPLOAD_BYTES: String(MAX_UPLOAD) } });
step(`router at ${router.url}`);
const browser = await launchBrowser();
let failed = false;
try {
  const a = await browser.newContext({ viewport: DESKTOP, acceptDownloads: true });
  // Lets the run cut the page's WebSocket the way a network drop would.
  await a.addInitScript(() => {
    const Native = window.WebSocket;
    window.__sockets = [];
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        window.__sockets.push(this);
      }
    };
  });
  const page = await a.newPage();
  const consoleErrors = [];
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  // The router's Content-Security-Policy must not block anything the app does.
  page.on("console", (m) => {
    if (m.type() === "error" && m.text().includes("Content Security Policy")) consoleErrors.push(m.text());
  });
  const shot = (p, name) => p.screenshot({ path: path.join(SHOTS, `${name}.png`) });

  // --- sign up -------------------------------------------------------------
  const emailA = `alice-${Date.now()}@example.com`;
  await page.goto(router.url + "/signin");
  await page.getByRole("link", { name: "Create an account" }).click();
  await page.getByLabel("Email").fill(emailA);
  await page.getByLabel("Password").fill("short");
  await page.getByLabel("Password").press("Enter");
  // The browser's own minlength check stops a too-short password before the server.
  assert.equal(await page.getByLabel("Password").evaluate((el) => el.validity.valid), false);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.waitForURL("**/chat");
  await page.getByTestId("empty-chat").waitFor();
  await page.getByText("No conversations yet.").waitFor();
  assert.ok(await page.getByTestId("chat-input").isEnabled());
  step("signed up, empty chat shown");

  // --- chat with the agent --------------------------------------------------
  await page.getByTestId("connection-status").filter({ hasText: "Workspace ready" }).waitFor({ timeout: 90_000 });
  step("workspace awake");
  // A second tab on the documents page: the agent's document appears there live.
  const docsTab = await a.newPage();
  await docsTab.goto(router.url + "/documents");
  await docsTab.getByTestId("no-documents").waitFor();
  await model.push(
    { tool_use: { id: "toolu_e2e_bash", name: "Bash", input: { command: "echo sandbox-says-$((6*7)) | tee result.txt", description: "say hello" } } },
    {
      tool_use: {
        id: "toolu_e2e_doc",
        name: "mcp__jarvis__save_document",
        input: { filename: "agent-plan.md", content: "# Agent plan\n\nWritten by **Jarvis**.", type: "markdown" },
      },
    },
    { text: ["I ran it and ", "saved **agent-plan.md**."] },
  );
  await page.getByTestId("chat-input").fill("Run a command and save a plan");
  await page.getByTestId("chat-input").press("Enter");
  const answer = page.getByTestId("assistant-message").last();
  await answer.getByText("saved agent-plan.md.").waitFor({ timeout: 90_000 });
  await answer.getByRole("strong").filter({ hasText: "agent-plan.md" }).waitFor();
  // The tool activity: compact, expandable, with what ran and its result.
  const bash = answer.getByTestId("tool").filter({ hasText: "echo sandbox-says" });
  await bash.getByRole("button").click();
  await bash.getByText("sandbox-says-42").first().waitFor();
  step("answer streamed; Bash ran in the sandbox and its result is shown");
  await docsTab.getByRole("link", { name: /agent-plan\.md/ }).waitFor({ timeout: 30_000 });
  await docsTab.close();
  step("the agent's document appeared in the other tab without a reload");
  await shot(page, "chat-desktop");

  // A connection dropped mid-answer resumes, without duplicates.
  await model.push({ stall_ms: 4000 });
  await page.getByTestId("chat-input").fill("Take your time");
  await page.getByTestId("chat-input").press("Enter");
  await page.getByRole("button", { name: "Stop" }).waitFor();
  await page.evaluate(() => window.__sockets.at(-1).close());
  await page.getByTestId("assistant-message").last().getByText("late").waitFor({ timeout: 60_000 });
  await page.getByRole("button", { name: "Send" }).waitFor();
  assert.equal(await page.getByTestId("assistant-message").last().innerText(), "late");
  assert.ok((await page.evaluate(() => window.__sockets.length)) >= 2, "the app reconnected");
  step("dropped connection resumed; the answer arrived once");

  // --- a file dropped on the chat is attached, uploaded and read by the agent --
  const dataTransfer = await page.evaluateHandle(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(["region,total\nnorth,4242\nsouth,17\n"], "sales.csv", { type: "text/csv" }));
    return dt;
  });
  const dropZone = page.getByTestId("chat-drop-zone");
  await dropZone.dispatchEvent("dragenter", { dataTransfer });
  await dropZone.dispatchEvent("dragover", { dataTransfer });
  await dropZone.dispatchEvent("drop", { dataTransfer });
  const pending = page.getByTestId("pending-attachments");
  await pending.getByTestId("attachment").filter({ hasText: "sales.csv" }).waitFor();
  await pending.getByLabel("Uploading sales.csv").waitFor({ state: "detached", timeout: 30_000 });
  step("a file dropped on the chat is attached and uploaded");
  await model.push(
    { tool_use: { id: "toolu_e2e_read", name: "Read", input: { file_path: "/workspace/uploads/sales.csv" } } },
    { text: ["North sold the most."] },
  );
  await page.getByTestId("chat-input").fill("Which region sold most?");
  await page.getByTestId("chat-input").press("Enter");
  await page.getByTestId("user-message").last().getByTestId("attachment").filter({ hasText: "sales.csv" }).waitFor();
  assert.equal(await pending.count(), 0, "the draft's attachments went with the message");
  const readAnswer = page.getByTestId("assistant-message").last();
  await readAnswer.getByText("North sold the most.").waitFor({ timeout: 90_000 });
  const read = readAnswer.getByTestId("tool").filter({ hasText: "Read" });
  await read.getByRole("button").click();
  await read.getByText("north,4242", { exact: false }).first().waitFor();
  step("the message shows its attachment; the agent's Read tool got the file");
  await shot(page, "chat-attachment-desktop");
  // The upload is in the files view, and can be deleted there.
  await page.getByRole("link", { name: "Files", exact: true }).click();
  const uploadRow = page.getByRole("row").filter({ hasText: "uploads/sales.csv" });
  await uploadRow.getByText("(upload)").waitFor();
  page.once("dialog", (d) => void d.accept());
  await uploadRow.getByRole("button", { name: "Delete sales.csv" }).click();
  await uploadRow.waitFor({ state: "detached" });
  await page.getByRole("link", { name: "Chat", exact: true }).click();
  step("the upload is listed in Files and deleted there");
  // A file over the limit (picked with the paperclip) gets the server's reason.
  await page.getByTestId("file-input").setInputFiles({ name: "huge.bin", mimeType: "application/octet-stream", buffer: Buffer.alloc(MAX_UPLOAD + 8 * 1024 * 1024, 7) });
  const huge = page.getByTestId("pending-attachments").getByTestId("attachment").filter({ hasText: "huge.bin" });
  await huge.getByRole("alert").filter({ hasText: `Files may be at most ${MAX_UPLOAD} bytes` }).waitFor({ timeout: 30_000 });
  await huge.getByRole("button", { name: "Remove huge.bin" }).click();
  assert.equal(psql(router.dbUrl, "select count(*) from files where path like 'uploads/huge%'"), "0");
  step("an oversize file shows the server's 413 message and stores nothing");

  // --- voice: a spoken answer plays, the first sentence while the rest streams --
  await model.push({ text: ["Hello from Jarvis. ", "This answer is spoken aloud."] });
  const toggle = page.getByTestId("voice-toggle");
  assert.equal(await toggle.getAttribute("aria-pressed"), "false");
  await toggle.click();
  assert.equal(await toggle.getAttribute("aria-pressed"), "true");
  await page.getByTestId("chat-input").fill("Say hello");
  await page.getByTestId("chat-input").press("Enter");
  const spoken = page.getByTestId("assistant-message").last();
  await spoken.getByText("This answer is spoken aloud.").waitFor({ timeout: 90_000 });
  const player = spoken.getByLabel("Spoken answer");
  await player.waitFor({ timeout: 60_000 });
  // Both sentences play to their end, one after the other, in the page's <audio>.
  await spoken.getByText("Played").waitFor({ timeout: 60_000 });
  const heard = await player.evaluate(async (el) => {
    // The signed URL decodes as real audio of a plausible length.
    const bytes = await (await fetch(el.src)).arrayBuffer();
    const audio = await new AudioContext().decodeAudioData(bytes);
    return { src: el.src, currentTime: el.currentTime, ended: el.ended, decoded: audio.duration };
  });
  assert.ok(heard.src.includes("/api/voice/") && heard.src.includes("sig="), heard.src);
  assert.ok(heard.ended && heard.currentTime > 0.5, JSON.stringify(heard));
  // "This answer is spoken aloud." is five words: between 0.75 and 5 seconds.
  assert.ok(heard.decoded > 0.75 && heard.decoded < 5, JSON.stringify(heard));
  // The same URL without its signature is refused.
  const fileId = new URL(heard.src).pathname.split("/").pop();
  assert.equal((await fetch(`${router.url}/api/voice/${fileId}`)).status, 403);
  await shot(page, "chat-voice-desktop");
  await toggle.click();
  step("spoken answer played in Chromium (both sentences to their end), audio decodes");

  // --- a wrong password gets a clear message (second context, same account) --
  {
    const c = await browser.newContext({ viewport: DESKTOP });
    const p = await c.newPage();
    await p.goto(router.url + "/signin");
    await p.getByLabel("Email").fill(emailA);
    await p.getByLabel("Password").fill("wrong-password-123");
    await p.getByRole("button", { name: "Sign in" }).click();
    await p.getByRole("alert").filter({ hasText: "Wrong email or password." }).waitFor();
    await p.getByLabel("Email").fill(emailA);
    await c.close();
  }
  step("wrong password message shown");

  // --- documents -----------------------------------------------------------
  await page.getByRole("link", { name: "Documents", exact: true }).click();
  await page.waitForURL("**/documents");
  await page.getByRole("link", { name: /agent-plan\.md/ }).waitFor();
  const content = "# Launch plan\n\nShip the **web app**.\n\n```rust\nfn main() { println!(\"hi\"); }\n```\n";
  const docId = psql(
    router.dbUrl,
    `insert into documents (owner_id, filename, doc_type, content)
     select id, 'launch-plan.md', 'markdown', $$${content}$$ from users where email = '${emailA}' returning id`,
  );
  psql(
    router.dbUrl,
    `insert into documents (owner_id, filename, doc_type, content)
     select id, 'other-notes.txt', 'text', 'groceries and errands' from users where email = '${emailA}'`,
  );
  await page.reload();
  await page.getByRole("link", { name: /launch-plan\.md/ }).waitFor();
  await page.getByRole("link", { name: /other-notes\.txt/ }).waitFor();
  // Search narrows the list.
  await page.getByLabel("Search documents").fill("launch");
  await page.getByRole("link", { name: /other-notes\.txt/ }).waitFor({ state: "detached" });
  await page.getByRole("link", { name: /launch-plan\.md/ }).click();
  await page.waitForURL(`**/documents/${docId}`);
  const viewer = page.getByTestId("document-content");
  await viewer.getByRole("heading", { name: "Launch plan" }).waitFor();
  await viewer.locator("code.hljs .hljs-keyword").first().waitFor();
  step("document listed, searched, rendered with highlighting");
  await shot(page, "documents-desktop");

  // Edit and save.
  await page.getByRole("button", { name: "Edit" }).click();
  await page.getByLabel("Content").fill("# Launch plan v2\n\nEdited in the browser.");
  await page.getByRole("button", { name: "Save" }).click();
  await viewer.getByRole("heading", { name: "Launch plan v2" }).waitFor();
  assert.equal(
    psql(router.dbUrl, `select content from documents where id = '${docId}'`),
    "# Launch plan v2\n\nEdited in the browser.",
  );
  step("edited and saved (PUT), stored in the database");

  // Download (fetch with the bearer token → blob).
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Download" }).click()]);
  assert.equal(download.suggestedFilename(), "launch-plan.md");
  const dlPath = await download.path();
  assert.equal(fs.readFileSync(dlPath, "utf8"), "# Launch plan v2\n\nEdited in the browser.");
  step("downloaded");

  // The document the agent saved: opened, edited, saved and downloaded too.
  await page.goto(router.url + "/documents");
  await page.getByRole("link", { name: /agent-plan\.md/ }).click();
  await page.waitForURL("**/documents/*");
  await viewer.getByRole("heading", { name: "Agent plan" }).waitFor();
  await page.getByRole("button", { name: "Edit" }).click();
  await page.getByLabel("Content").fill("# Agent plan\n\nApproved by Alice.");
  await page.getByRole("button", { name: "Save" }).click();
  await viewer.getByText("Approved by Alice.").waitFor();
  const [agentDl] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Download" }).click()]);
  assert.equal(agentDl.suggestedFilename(), "agent-plan.md");
  assert.equal(fs.readFileSync(await agentDl.path(), "utf8"), "# Agent plan\n\nApproved by Alice.");
  step("the agent's document opened, edited, saved and downloaded");

  // --- files and account ---------------------------------------------------
  await page.getByRole("link", { name: "Files", exact: true }).click();
  // The file the agent's command wrote in its workspace, stored after the turn.
  await page.getByText("result.txt").first().waitFor();
  step("the workspace file is listed");
  await page.getByRole("link", { name: "Account", exact: true }).click();
  await page.getByTestId("account-email").filter({ hasText: emailA }).waitFor();
  assert.equal(await page.getByTestId("account-tier").textContent(), "free");
  // Billing off is said up front: the buttons are disabled with the reason.
  await page.getByTestId("billing-off").waitFor();
  assert.ok(await page.getByRole("button", { name: "Manage billing" }).isDisabled());
  step("account page: plan shown, billing off");
  await shot(page, "account-desktop");

  // Dark theme toggle.
  await page.getByRole("button", { name: "Switch to dark theme" }).click();
  assert.ok(await page.evaluate(() => document.documentElement.classList.contains("dark")));
  await page.goto(router.url + `/documents/${docId}`);
  await viewer.getByRole("heading", { name: "Launch plan v2" }).waitFor();
  await shot(page, "documents-desktop-dark");
  await page.getByRole("button", { name: "Switch to light theme" }).click();

  // --- the same user on a phone ---------------------------------------------
  const phone = await browser.newContext({ viewport: PHONE, isMobile: true, hasTouch: true });
  const pp = await phone.newPage();
  await pp.goto(router.url + "/chat");
  await pp.waitForURL("**/signin");
  await pp.getByLabel("Email").fill(emailA);
  await pp.getByLabel("Password").fill(PASSWORD);
  await pp.getByRole("button", { name: "Sign in" }).click();
  await pp.waitForURL("**/chat");
  await pp.getByTestId("empty-chat").waitFor();
  await shot(pp, "chat-phone");
  await pp.goto(router.url + "/documents");
  await pp.getByRole("link", { name: /launch-plan\.md/ }).waitFor();
  await shot(pp, "documents-list-phone");
  await pp.getByRole("link", { name: /launch-plan\.md/ }).click();
  await pp.getByTestId("document-content").getByRole("heading", { name: "Launch plan v2" }).waitFor();
  await shot(pp, "documents-phone");
  await pp.goto(router.url + "/account");
  await pp.getByTestId("account-email").waitFor();
  await shot(pp, "account-phone");
  // No horizontal scrolling at phone width.
  assert.ok(await pp.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1));
  await phone.close();
  step("phone screenshots");

  // --- a second user sees none of it ---------------------------------------
  const b = await browser.newContext({ viewport: DESKTOP });
  const pb = await b.newPage();
  await pb.goto(router.url + "/signup");
  await pb.getByLabel("Email").fill(`bob-${Date.now()}@example.com`);
  await pb.getByLabel("Password").fill(PASSWORD);
  await pb.getByRole("button", { name: "Sign up" }).click();
  await pb.waitForURL("**/chat");
  await pb.getByText("No conversations yet.").waitFor();
  await pb.getByRole("link", { name: "Documents", exact: true }).click();
  await pb.getByTestId("no-documents").waitFor();
  await pb.getByLabel("Search documents").fill("launch");
  await pb.getByTestId("no-documents").filter({ hasText: "No document matches." }).waitFor();
  await pb.goto(router.url + `/documents/${docId}`);
  await pb.getByRole("alert").filter({ hasText: "Not found" }).waitFor();
  assert.equal(await pb.getByText("Edited in the browser.").count(), 0);
  await b.close();
  step("second user sees no documents, and alice's document id answers not found");

  // --- sign out --------------------------------------------------------------
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL("**/signin");
  await page.getByText("You are signed out.").waitFor();
  assert.equal(await page.evaluate(() => localStorage.getItem("jarvis.refresh_token")), null);
  await page.goto(router.url + "/documents");
  await page.waitForURL("**/signin");
  step("signed out; protected pages go to sign-in");

  assert.deepEqual(consoleErrors, [], "no uncaught page errors or CSP violations");
  await a.close();
  console.log(`e2e: passed in ${((Date.now() - started) / 1000).toFixed(1)}s; screenshots in ${SHOTS}`);
} catch (e) {
  failed = true;
  console.error("e2e: FAILED:", e);
} finally {
  await browser.close();
  await router.stop();
  model.stop();
}
process.exit(failed ? 1 : 0);
