// End-to-end: the chat's sidebar and side pane. Search finds a conversation by a
// word of its messages and never another user's; conversations are grouped by
// date of last activity; a new conversation is titled from its first message
// while the answer still streams, in the list and the browser tab; a document
// the agent saved opens in the side pane rendered, an edit asks before it is
// dropped (closing the pane, leaving the page), saves, and the chat streams on
// beside it; the documents page asks the same; an uploaded image opens in the pane; at 390 px the pane is a
// full-screen overlay that closes. Screenshots at both widths with the pane open.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { buildBinaries, launchBrowser, psql, startFakeModel, startRouter, WEB } from "../lib.mjs";

const SHOTS = path.join(WEB, "e2e/screenshots");
fs.mkdirSync(SHOTS, { recursive: true });
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const PASSWORD = "correct-horse-battery";
const started = Date.now();
const step = (s) => console.log(`e2e pane: ${((Date.now() - started) / 1000).toFixed(1)}s ${s}`);

/** A small RGB PNG (a gradient), so the pane has a real image to decode. */
function png(width, height) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type), data]);
    const sum = Buffer.alloc(4);
    sum.writeUInt32BE(crc(body));
    return Buffer.concat([len, body, sum]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const rows = [];
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + width * 3);
    for (let x = 0; x < width; x++) row.set([Math.round((255 * x) / width), 120, Math.round((255 * y) / height)], 1 + x * 3);
    rows.push(row);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", zlib.deflateSync(Buffer.concat(rows))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

buildBinaries();
const model = await startFakeModel();
const router = await startRouter({ log: !!process.env.E2E_LOG, modelUrl: model.url });
step(`router at ${router.url}`);
const browser = await launchBrowser();
let failed = false;
try {
  // The browser and the database agree on the day: date groups are by calendar day.
  const a = await browser.newContext({ viewport: DESKTOP, timezoneId: "UTC" });
  const page = await a.newPage();
  const consoleErrors = [];
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error" && m.text().includes("Content Security Policy")) consoleErrors.push(m.text());
  });
  const shot = (p, name) => p.screenshot({ path: path.join(SHOTS, `${name}.png`) });
  // Every dialog is recorded and dismissed unless a step says otherwise.
  const dialogs = [];
  let acceptDialogs = false;
  page.on("dialog", (d) => {
    dialogs.push(d.message());
    void (acceptDialogs ? d.accept() : d.dismiss());
  });

  // --- alice signs up; bob (another user) has a conversation of his own --------
  const emailA = `alice-${Date.now()}@example.com`;
  await page.goto(router.url + "/signup");
  await page.getByLabel("Email").fill(emailA);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.waitForURL("**/chat");
  assert.equal(await page.title(), "Jarvis");
  const alice = psql(router.dbUrl, `select id from users where email = '${emailA}'`);
  const bobReply = await fetch(`${router.url}/api/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email: `bob-${Date.now()}@example.com`, password: PASSWORD }),
  });
  assert.ok(bobReply.ok, await bobReply.clone().text());
  const bob = (await bobReply.json()).user.id;

  // Conversations with older activity (inserted as history), and bob's.
  const conversation = (owner, title, ago, text) =>
    psql(
      router.dbUrl,
      `with c as (insert into conversations (owner_id, title, created_at, updated_at)
         values ('${owner}', '${title}', now() - interval '${ago}', now() - interval '${ago}') returning id)
       insert into messages (owner_id, conversation_id, role, content)
         select '${owner}'::uuid, id, 'user', '${text}' from c union all
         select '${owner}'::uuid, id, 'assistant', 'Noted.' from c returning conversation_id`,
    ).split("\n")[0];
  conversation(alice, "Garden notes", "1 day", "When should I plant the tomatoes?");
  const soup = conversation(alice, "Soup recipe", "3 days", "A soup with pomegranate seeds, please");
  conversation(alice, "Tax questions", "20 days", "Which receipts do I keep?");
  conversation(alice, "Old project", "90 days", "Kick-off notes");
  conversation(bob, "Bob pomegranate secret", "1 hour", "my pomegranate secret");
  await page.reload();
  const sidebar = page.getByRole("complementary", { name: "Conversations" });
  await sidebar.getByRole("link", { name: "Garden notes" }).waitFor();
  const groups = await sidebar.getByTestId("conversation-group").evaluateAll((els) =>
    els.map((el) => [el.querySelector("h2").textContent, [...el.querySelectorAll("a")].map((l) => l.textContent)]),
  );
  const old = new Date(Date.now() - 90 * 24 * 3600 * 1000);
  const oldLabel =
    old.toLocaleString("en-US", { month: "long", timeZone: "UTC" }) + (old.getUTCFullYear() === new Date().getUTCFullYear() ? "" : ` ${old.getUTCFullYear()}`);
  assert.deepEqual(groups, [
    ["Yesterday", ["Garden notes"]],
    ["Previous 7 days", ["Soup recipe"]],
    ["Previous 30 days", ["Tax questions"]],
    [oldLabel, ["Old project"]],
  ]);
  step("conversations grouped: Yesterday, Previous 7 days, Previous 30 days, " + oldLabel);

  // --- search --------------------------------------------------------------------
  const search = sidebar.getByLabel("Search conversations");
  await search.fill("Pomegranate");
  await sidebar.getByText("1 conversation found").waitFor();
  assert.deepEqual(await sidebar.getByRole("link").allTextContents(), ["Soup recipe"]);
  assert.equal(await page.getByText("Bob pomegranate secret").count(), 0, "another user's conversation never matches");
  await search.fill("secret");
  await sidebar.getByTestId("no-conversation-found").waitFor();
  // Wildcards match only themselves.
  await search.fill("%");
  await sidebar.getByTestId("no-conversation-found").waitFor();
  await search.fill("");
  await sidebar.getByRole("link", { name: "Old project" }).waitFor();
  step("search finds alice's conversation by a word of its messages, never bob's");

  // --- a new conversation is titled from its first message, live ------------------
  await page.getByTestId("connection-status").filter({ hasText: "Workspace ready" }).waitFor({ timeout: 90_000 });
  step("workspace awake");
  const TITLE = "Plan a weekend in Lisbon with friends and family, somewhere…";
  await model.push({ stall_ms: 3000 });
  await page.getByTestId("chat-input").fill("## Plan a **weekend** in Lisbon with friends and family, somewhere near the sea please\nsecond line");
  await page.getByTestId("chat-input").press("Enter");
  await page.waitForURL(/\/chat\/[0-9a-f-]{36}$/);
  const today = sidebar.getByTestId("conversation-group").filter({ has: page.getByRole("heading", { name: "Today" }) });
  await today.getByRole("link", { name: TITLE }).waitFor();
  // Shown while the answer still streams.
  assert.ok(await page.getByRole("button", { name: "Stop" }).isVisible(), "the title came with the turn's start");
  await page.waitForFunction((t) => document.title === `${t} · Jarvis`, TITLE);
  await page.getByTestId("assistant-message").last().getByText("late").waitFor({ timeout: 60_000 });
  const conversationId = page.url().split("/").pop();
  assert.equal(psql(router.dbUrl, `select title from conversations where id = '${conversationId}'`), TITLE);
  step("the new conversation's title came from its first message, in the list and the tab");

  // --- a saved document opens in the side pane -------------------------------------
  await model.push(
    {
      tool_use: {
        id: "toolu_pane_doc",
        name: "mcp__jarvis__save_document",
        input: { filename: "trip-plan.md", content: "# Trip plan\n\nDay one: **beach**.", type: "markdown" },
      },
    },
    { text: ["Saved the plan."] },
  );
  await page.getByTestId("chat-input").fill("Save a trip plan");
  await page.getByTestId("chat-input").press("Enter");
  const answer = page.getByTestId("assistant-message").last();
  await answer.getByText("Saved the plan.").waitFor({ timeout: 90_000 });
  await answer.getByRole("link", { name: "trip-plan.md" }).click();
  const pane = page.getByTestId("side-pane");
  await pane.getByRole("heading", { name: "Trip plan" }).waitFor();
  await pane.getByRole("strong").filter({ hasText: "beach" }).waitFor();
  assert.ok(page.url().endsWith(`/chat/${conversationId}`), "the chat stays where it was");
  const box = await pane.boundingBox();
  assert.ok(box.x > 600 && box.width >= 400 && box.width < 700, `the pane is beside the chat: ${JSON.stringify(box)}`);
  assert.ok(await page.getByTestId("chat-input").isVisible(), "the chat stays visible beside the pane");
  await shot(page, "pane-document-desktop");
  step("the agent's document opened in the side pane, rendered");

  // The chat keeps streaming while the pane is open.
  await model.push({ stall_ms: 1500 });
  await page.getByTestId("chat-input").fill("Anything else?");
  await page.getByTestId("chat-input").press("Enter");
  await page.getByTestId("assistant-message").last().getByText("late").waitFor({ timeout: 60_000 });
  assert.ok(await pane.getByRole("heading", { name: "Trip plan" }).isVisible());
  step("an answer streamed while the pane stayed open");

  // Edit, then close: asked first, and the edit stays.
  await pane.getByRole("button", { name: "Edit" }).click();
  const content = pane.getByLabel("Content");
  await content.fill("# Trip plan\n\nDay one: **beach**. Day two: hills.");
  dialogs.length = 0;
  await pane.getByRole("button", { name: "Close pane" }).click();
  assert.deepEqual(dialogs, ["You have unsaved changes. Discard them?"]);
  assert.equal(await content.inputValue(), "# Trip plan\n\nDay one: **beach**. Day two: hills.");
  // Going to another page asks too (react-router's blocker), and stays.
  await page.getByRole("link", { name: "Documents", exact: true }).click();
  await page.waitForTimeout(300);
  assert.equal(dialogs.length, 2, `leaving the page asked (at ${page.url()})`);
  assert.ok(page.url().endsWith(`/chat/${conversationId}`), "the page was not left");
  // Another conversation is still the chat page: the pane and its edit stay, unasked.
  await sidebar.getByRole("link", { name: "Garden notes" }).click();
  await page.getByTestId("user-message").getByText("When should I plant the tomatoes?").waitFor();
  assert.equal(await content.inputValue(), "# Trip plan\n\nDay one: **beach**. Day two: hills.");
  assert.equal(dialogs.length, 2);
  await page.waitForFunction(() => document.title === "Garden notes · Jarvis");
  // Save works; then closing asks nothing.
  await pane.getByRole("button", { name: "Save" }).click();
  await pane.getByText("Day two: hills.").waitFor();
  assert.equal(
    psql(router.dbUrl, "select content from documents where filename = 'trip-plan.md'"),
    "# Trip plan\n\nDay one: **beach**. Day two: hills.",
  );
  await pane.getByRole("button", { name: "Close pane" }).click();
  await pane.waitFor({ state: "detached" });
  assert.equal(dialogs.length, 2, "nothing unsaved, nothing asked");
  step("unsaved edits: closing and leaving asked and kept them; saved; closed");

  // --- the documents page's editor asks the same -------------------------------------
  await page.getByRole("link", { name: "Documents", exact: true }).click();
  await page.getByRole("link", { name: /trip-plan\.md/ }).click();
  await page.getByRole("button", { name: "Edit" }).click();
  await page.getByLabel("Content").fill("a draft that must not vanish");
  dialogs.length = 0;
  await page.getByRole("link", { name: "Chat", exact: true }).click();
  await page.waitForTimeout(300);
  assert.deepEqual(dialogs, ["You have unsaved changes. Discard them?"]);
  assert.ok(page.url().includes("/documents/"), "the documents page was not left");
  await page.getByRole("button", { name: "Cancel" }).click();
  assert.equal(dialogs.length, 2, "Cancel asked too");
  assert.equal(await page.getByLabel("Content").inputValue(), "a draft that must not vanish");
  acceptDialogs = true;
  await page.getByRole("link", { name: "Chat", exact: true }).click();
  await page.waitForURL("**/chat");
  acceptDialogs = false;
  assert.equal(dialogs.length, 3);
  assert.ok(psql(router.dbUrl, "select content from documents where filename = 'trip-plan.md'").endsWith("Day two: hills."));
  step("the documents page asked before dropping an edit (leaving, Cancel)");

  // --- an uploaded image opens in the pane ------------------------------------------
  await page.getByRole("button", { name: "+ New conversation" }).click();
  await page.getByTestId("file-input").setInputFiles({ name: "photo.png", mimeType: "image/png", buffer: png(160, 100) });
  const pending = page.getByTestId("pending-attachments");
  await pending.getByTestId("attachment").filter({ hasText: "photo.png" }).waitFor();
  await pending.getByLabel("Uploading photo.png").waitFor({ state: "detached", timeout: 30_000 });
  await model.push({ text: ["A nice gradient."] });
  await page.getByTestId("chat-input").fill("What is in this picture?");
  await page.getByTestId("chat-input").press("Enter");
  await page.getByTestId("assistant-message").last().getByText("A nice gradient.").waitFor({ timeout: 90_000 });
  await page.getByTestId("user-message").last().getByRole("button", { name: "Open photo.png" }).click();
  const img = pane.getByRole("img", { name: "photo.png" });
  await img.waitFor();
  await page.waitForFunction(() => document.querySelector('[data-testid="side-pane"] img')?.naturalWidth === 160);
  await shot(page, "pane-image-desktop");
  step("the uploaded image opened in the pane and decoded");

  // The workspace's files, from the chat header.
  await pane.getByRole("button", { name: "All files" }).click();
  await pane.getByRole("button", { name: /uploads\/photo\.png/ }).waitFor();
  await pane.getByRole("button", { name: "Close pane" }).click();

  // --- at 390 px the pane is a full-screen overlay that closes ----------------------
  await page.setViewportSize(PHONE);
  await page.getByTestId("user-message").last().getByRole("button", { name: "Open photo.png" }).click();
  await img.waitFor();
  const phoneBox = await pane.boundingBox();
  assert.deepEqual(
    [phoneBox.x, phoneBox.y, phoneBox.width, phoneBox.height].map(Math.round),
    [0, 0, PHONE.width, PHONE.height],
    "the pane covers the screen",
  );
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1), "no horizontal scrolling");
  await shot(page, "pane-image-phone");
  await pane.getByRole("button", { name: "Close pane" }).click();
  await pane.waitFor({ state: "detached" });
  await page.getByTestId("chat-input").waitFor();
  step("at 390 px the pane covered the screen and closed");

  assert.deepEqual(consoleErrors, [], "no uncaught page errors or CSP violations");
  await a.close();
  console.log(`e2e pane: passed in ${((Date.now() - started) / 1000).toFixed(1)}s; screenshots in ${SHOTS}`);
} catch (e) {
  failed = true;
  console.error("e2e pane: FAILED:", e);
} finally {
  await browser.close();
  await router.stop();
  model.stop();
}
process.exit(failed ? 1 : 0);
