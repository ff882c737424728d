// End-to-end: the polish of the app. /favicon.ico answers an image; the header's
// theme button follows a theme chosen on the Account page; a Write and an Edit tool
// card read as words, with the written file and the edit's diff; a code block and an
// answer copy to the clipboard; the Files page shows whole names at desktop width
// (truncated with a tooltip on a phone) and image thumbnails; at 390 px the header's
// Account tab fits and is clickable, the message box's placeholder fits and touch
// targets are 44 px tall. Screenshots (polish-*) at both widths go to e2e/screenshots/.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { buildBinaries, launchBrowser, startFakeModel, startRouter, WEB } from "../lib.mjs";

const SHOTS = path.join(WEB, "e2e/screenshots");
fs.mkdirSync(SHOTS, { recursive: true });
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const started = Date.now();
const step = (s) => console.log(`e2e polish: ${((Date.now() - started) / 1000).toFixed(1)}s ${s}`);

buildBinaries();
const model = await startFakeModel();
const router = await startRouter({ log: !!process.env.E2E_LOG, modelUrl: model.url });
const browser = await launchBrowser();
let failed = false;
try {
  // --- the favicon -----------------------------------------------------------
  for (const [p, type] of [["/favicon.ico", /^image\//], ["/favicon.svg", /^image\/svg\+xml/]]) {
    const r = await fetch(router.url + p);
    assert.equal(r.status, 200, `${p} answers 200`);
    assert.match(r.headers.get("content-type") ?? "", type, `${p} is an image`);
    assert.ok((await r.arrayBuffer()).byteLength > 100, `${p} has content`);
  }
  step("/favicon.ico and /favicon.svg answer images");

  const ctx = await browser.newContext({ viewport: DESKTOP, permissions: ["clipboard-read", "clipboard-write"] });
  const page = await ctx.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const shot = (name) => page.screenshot({ path: path.join(SHOTS, `polish-${name}.png`) });
  const clipboard = () => page.evaluate(() => navigator.clipboard.readText());

  await page.goto(router.url + "/signup");
  await page.getByLabel("Email").fill(`polish-${Date.now()}@example.com`);
  await page.getByLabel("Password").fill("correct-horse-battery");
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.waitForURL("**/chat");
  assert.equal(await page.locator('link[rel="icon"][href="/favicon.ico"]').count(), 1, "the page links its favicon");

  await page.getByTestId("connection-status").filter({ hasText: "Workspace ready" }).waitFor({ timeout: 90_000 });
  step("workspace awake");

  // --- the theme: one source of truth -------------------------------------------
  const toggle = page.getByTestId("theme-toggle");
  await page.getByRole("link", { name: "Account", exact: true }).click();
  const themeSelect = page.getByLabel("Theme", { exact: true });
  await themeSelect.selectOption("dark");
  assert.ok(await page.evaluate(() => document.documentElement.classList.contains("dark")));
  assert.equal(await toggle.getAttribute("aria-label"), "Switch to light theme", "the header button follows the Account page");
  assert.equal(await toggle.getAttribute("title"), "Theme: dark");
  await toggle.click();
  assert.equal(await themeSelect.inputValue(), "light", "the Account page follows the header button");
  assert.equal(await toggle.getAttribute("aria-label"), "Switch to dark theme");
  await themeSelect.selectOption("system");
  assert.equal(await toggle.getAttribute("title"), "Theme: system");
  step("theme: the header button and the Account page show the same theme");

  // --- readable tool cards, code blocks, copying ---------------------------------
  await page.getByRole("link", { name: "Chat", exact: true }).click();
  const code = 'def greet(name):\n    return f"Hello, {name}!"';
  await model.push(
    { tool_use: { id: "toolu_pw", name: "Write", input: { file_path: "/workspace/notes/greet.py", content: "def greet(name):\n    return 'hi ' + name\n\nprint(greet('Ada'))\n" } } },
    { tool_use: { id: "toolu_pe", name: "Edit", input: { file_path: "/workspace/notes/greet.py", old_string: "    return 'hi ' + name\n", new_string: '    return f"Hello, {name}!"\n' } } },
    { text: [`I wrote and polished **greet.py**:\n\n\`\`\`python\n${code}\n\`\`\`\n\nRun it with \`python3 notes/greet.py\`.`] },
  );
  await page.getByTestId("chat-input").fill("Write a greeting script");
  await page.getByTestId("chat-input").press("Enter");
  const answer = page.getByTestId("assistant-message").last();
  await answer.getByText("Run it with").waitFor({ timeout: 90_000 });
  const chatUrl = page.url();

  const write = answer.getByRole("button", { name: /^Wrote notes\/greet\.py/ });
  await write.waitFor();
  assert.equal(await answer.getByText("Write", { exact: true }).count(), 0, "no raw tool names");
  await write.click();
  await answer.getByRole("button", { name: /Show the content of greet\.py \(4 lines\)/ }).click();
  const content = answer.getByTestId("tool-write-content");
  await content.locator("code.language-python").waitFor();
  await content.getByText("print(greet('Ada'))", { exact: false }).waitFor();
  const edit = answer.getByRole("button", { name: /notes\/greet\.py/ }).filter({ hasText: /Edit/ });
  const editLabel = await edit.locator("[title]").first().getAttribute("title");
  assert.match(editLabel, /^(Edited|Could not edit) notes\/greet\.py/);
  await edit.click();
  const diff = answer.getByTestId("tool-diff");
  await diff.locator("del").filter({ hasText: "return 'hi ' + name" }).waitFor();
  await diff.locator("ins").filter({ hasText: 'return f"Hello, {name}!"' }).waitFor();
  assert.match(await diff.locator("del").first().innerText(), /^− /, "removed lines carry a − sign");
  assert.match(await diff.locator("ins").first().innerText(), /^\+ /, "added lines carry a + sign");
  assert.notEqual(
    await diff.locator("ins").first().evaluate((e) => getComputedStyle(e).backgroundColor),
    await diff.locator("del").first().evaluate((e) => getComputedStyle(e).backgroundColor),
  );
  step(`tool cards: "Wrote notes/greet.py" with its content, "${editLabel}" with its diff`);

  const block = answer.getByTestId("code-block").filter({ hasText: "def greet(name)" }).last();
  assert.equal(await block.getByTestId("code-language").innerText(), "python");
  await block.getByRole("button", { name: "Copy python code" }).click();
  await block.getByText("Copied", { exact: true }).waitFor();
  assert.equal(await clipboard(), code);
  await answer.getByRole("button", { name: "Copy answer" }).click();
  const copied = await clipboard();
  assert.ok(copied.startsWith("I wrote and polished **greet.py**:") && copied.includes(code), `answer copied: ${copied}`);
  step("a code block and the answer copy to the clipboard");
  await shot("chat-desktop");
  await toggle.click();
  await shot("chat-desktop-dark");
  await toggle.click();

  // --- the Files page -----------------------------------------------------------
  const longName = "quarterly-report-final-version-with-appendix-2026.csv";
  const png = await page.screenshot({ clip: { x: 0, y: 0, width: 48, height: 48 } });
  await page.getByRole("link", { name: "Files", exact: true }).click();
  await page.getByTestId("files-upload-input").setInputFiles([
    { name: longName, mimeType: "text/csv", buffer: Buffer.from("a,b\n1,2\n") },
    { name: "corner.png", mimeType: "image/png", buffer: png },
  ]);
  const full = `uploads/${longName}`;
  const nameCell = page.getByTitle(full, { exact: true });
  await nameCell.waitFor();
  const fits = () => nameCell.evaluate((e) => ({ fits: e.scrollWidth <= e.clientWidth + 1, width: e.clientWidth, scroll: e.scrollWidth }));
  const wide = await fits();
  assert.ok(wide.fits, `the whole name is visible at 1280 px (${JSON.stringify(wide)})`);
  await page.getByText(full, { exact: true }).waitFor();
  const thumb = page.getByRole("row").filter({ hasText: "uploads/corner.png" }).getByTestId("file-thumb");
  await thumb.waitFor();
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="file-thumb"]')].every((i) => i.complete && i.naturalWidth > 0));
  step("files: whole names at 1280 px; an image gets a thumbnail");
  await shot("files-desktop");

  // --- at phone width -------------------------------------------------------------
  await page.setViewportSize(PHONE);
  const narrow = await fits();
  assert.ok(!narrow.fits && narrow.width > 80, `a long name is truncated at 390 px, not cut short (${JSON.stringify(narrow)})`);
  assert.equal(await nameCell.getAttribute("title"), full, "the full name is in the tooltip");
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1), "no sideways scrolling");
  await shot("files-phone");

  // The header fits: every tab visible, Account clickable, touch targets 44 px.
  const nav = page.getByRole("navigation", { name: "Main" });
  assert.ok(await nav.evaluate((n) => n.scrollWidth <= n.clientWidth + 1), "the nav does not overflow at 390 px");
  const account = page.getByRole("link", { name: "Account", exact: true });
  const box = await account.boundingBox();
  assert.ok(box && box.x >= 0 && box.x + box.width <= PHONE.width, `the Account tab is on screen (${JSON.stringify(box)})`);
  const hit = await page.evaluate(({ x, y }) => document.elementFromPoint(x, y)?.closest("a")?.textContent, { x: box.x + box.width / 2, y: box.y + box.height / 2 });
  assert.equal(hit, "Account", "nothing covers the Account tab");
  const tall = async (loc, what) => {
    const b = await loc.boundingBox();
    assert.ok(b && b.height >= 44, `${what} is at least 44 px tall (${b?.height})`);
  };
  for (const name of ["Chat", "Documents", "Files", "Account"]) await tall(nav.getByRole("link", { name, exact: true }), `the ${name} tab`);
  await tall(page.getByTestId("theme-toggle"), "the theme button");
  await tall(page.getByRole("button", { name: "Sign out" }), "Sign out");
  await account.click();
  await page.waitForURL("**/account");
  step("phone: the header fits, Account is clickable, header targets are 44 px");

  await page.goto(chatUrl);
  const input = page.getByTestId("chat-input");
  await input.waitFor();
  const placeholder = await input.evaluate((t) => {
    const s = getComputedStyle(t);
    const c = document.createElement("canvas").getContext("2d");
    c.font = `${s.fontSize} ${s.fontFamily}`;
    const room = t.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight);
    return { text: t.placeholder, width: c.measureText(t.placeholder).width, room };
  });
  assert.ok(placeholder.width <= placeholder.room, `the placeholder fits on one line (${JSON.stringify(placeholder)})`);
  for (const name of ["Attach files", "Send"]) await tall(page.getByRole("button", { name }), `the ${name} button`);
  step(`phone: the placeholder "${placeholder.text}" fits; chat buttons are 44 px`);

  // The conversation with its cards at 390 px.
  const phoneAnswer = page.getByTestId("assistant-message").last();
  await phoneAnswer.getByText("Run it with").waitFor({ timeout: 30_000 });
  await tall(phoneAnswer.getByRole("button", { name: "Copy answer" }), "Copy answer");
  await tall(phoneAnswer.getByTestId("tool").first().getByRole("button").first(), "a tool card");
  await phoneAnswer.getByRole("button", { name: /^Wrote notes\/greet\.py/ }).click();
  await phoneAnswer.getByTestId("tool").first().scrollIntoViewIfNeeded();
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1), "no sideways scrolling in the chat");
  await shot("chat-phone");
  step("phone: chat with tool cards and code");

  assert.deepEqual(errors, [], "no uncaught page errors");
  await ctx.close();
  console.log(`e2e polish: passed in ${((Date.now() - started) / 1000).toFixed(1)}s`);
} catch (e) {
  failed = true;
  console.error("e2e polish: FAILED:", e);
} finally {
  await browser.close();
  await router.stop();
  model.stop();
}
process.exit(failed ? 1 : 0);
