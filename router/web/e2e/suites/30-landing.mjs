// Landing and account: signed out, `/` says what Jarvis is and shows the plans
// with the prices of the plans table (JARVIS_PLANS: a changed price shows); a
// plan's button leads to sign-up with it chosen; a guessable password is refused
// with the reason, a strong one works; with billing off the paid plans say so up
// front (landing, sign-up, Account); the Account page shows usage in money,
// tokens and storage; example prompts on the empty chat send a message. A second
// router with billing on (a fake Stripe API in this process): sign-up with Pro
// goes on to the checkout URL Stripe gave, and Manage billing to the portal.
// Screenshots of landing, sign-up and account at 1280 and 390 px.
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { buildBinaries, launchBrowser, startFakeModel, startRouter, WEB } from "../lib.mjs";

const SHOTS = path.join(WEB, "e2e/screenshots");
fs.mkdirSync(SHOTS, { recursive: true });
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const PASSWORD = "correct-horse-battery";
const started = Date.now();
const step = (s) => console.log(`e2e landing: ${((Date.now() - started) / 1000).toFixed(1)}s ${s}`);

/** A fake Stripe API: customers, Checkout and portal sessions; pages for their URLs. */
function startFakeStripe() {
  const requests = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      const form = Object.fromEntries(new URLSearchParams(body));
      requests.push({ method: req.method, path: req.url, form });
      const send = (status, obj, type = "application/json") => {
        res.writeHead(status, { "content-type": type });
        res.end(typeof obj === "string" ? obj : JSON.stringify(obj));
      };
      const base = `http://127.0.0.1:${server.address().port}`;
      if (req.method === "POST" && req.url === "/v1/customers") return send(200, { id: "cus_e2e" });
      if (req.method === "POST" && req.url === "/v1/checkout/sessions") {
        return send(200, { id: "cs_e2e", url: `${base}/pay/cs_e2e?price=${form["line_items[0][price]"] ?? ""}` });
      }
      if (req.method === "POST" && req.url === "/v1/billing_portal/sessions") return send(200, { id: "bps_e2e", url: `${base}/portal/bps_e2e` });
      if (req.method === "GET" && req.url.startsWith("/pay/")) return send(200, "<!doctype html><title>Fake Checkout</title><h1>Fake Stripe Checkout</h1>", "text/html");
      if (req.method === "GET" && req.url.startsWith("/portal/")) return send(200, "<!doctype html><title>Fake Portal</title><h1>Fake Stripe portal</h1>", "text/html");
      send(404, { error: { message: `no fake for ${req.method} ${req.url}` } });
    });
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({ url: `http://127.0.0.1:${server.address().port}`, requests, stop: () => server.close() }),
    ),
  );
}

buildBinaries();
const model = await startFakeModel();
// The plans table with a changed price: the landing page must show it.
const plansTable = JSON.stringify({ pro: { price_cents: 1234 } });
const off = await startRouter({ log: !!process.env.E2E_LOG, modelUrl: model.url, env: { JARVIS_PLANS: plansTable } });
step(`router (billing off) at ${off.url}`);
const stripe = await startFakeStripe();
const on = await startRouter({
  log: !!process.env.E2E_LOG,
  modelUrl: model.url,
  env: {
    JARVIS_PLANS: plansTable,
    STRIPE_SECRET_KEY: "sk_test_e2e",
    STRIPE_WEBHOOK_SECRET: "whsec_e2e",
    STRIPE_API_BASE: stripe.url,
    STRIPE_PRICE_PRO: "price_pro_e2e",
  },
});
step(`router (billing on, fake Stripe) at ${on.url}`);
const browser = await launchBrowser();
let failed = false;
try {
  const ctx = await browser.newContext({ viewport: DESKTOP });
  const page = await ctx.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error" && m.text().includes("Content Security Policy")) errors.push(m.text());
  });
  const shot = (p, name) => p.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });

  // --- the API: public plans ------------------------------------------------
  const plans = await (await fetch(`${off.url}/api/plans`)).json();
  assert.equal(plans.billing, false);
  assert.deepEqual(plans.plans.map((p) => p.tier), ["free", "pro", "enterprise"]);
  assert.equal(plans.plans[1].price_cents, 1234);
  assert.equal(plans.plans[1].purchasable, false);

  // --- landing, billing off -------------------------------------------------
  await page.goto(off.url + "/");
  await page.getByRole("heading", { level: 1 }).filter({ hasText: "personal AI agent" }).waitFor();
  await page.getByTestId("landing-plans").waitFor();
  assert.equal(await page.getByTestId("price-pro").textContent(), "$12.34", "the price of the plans table");
  assert.equal(await page.getByTestId("price-free").textContent(), "$0");
  assert.equal(await page.getByTestId("price-enterprise").textContent(), "On request");
  assert.match(await page.getByTestId("landing-plan-pro").innerText(), /20M tokens a month[\s\S]*50 GB of storage/);
  await page.getByTestId("landing-billing-off").waitFor();
  assert.match(await page.getByTestId("landing-unavailable-pro").innerText(), /does not take payments/);
  step("landing: plans and prices from the plans table; paid plans say billing is off");
  await shot(page, "landing-desktop");
  const phone = await browser.newContext({ viewport: PHONE });
  const pp = await phone.newPage();
  await pp.goto(off.url + "/");
  await pp.getByTestId("landing-plans").waitFor();
  assert.ok(await pp.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), "no sideways scroll at 390 px");
  await shot(pp, "landing-phone");

  // Sign-up asked for Pro while billing is off: Free is chosen, Pro says why.
  await page.goto(off.url + "/signup?plan=pro");
  await page.getByTestId("plan-picker").waitFor();
  assert.ok(await page.getByRole("radio", { name: /Free/ }).isChecked());
  assert.ok(await page.getByRole("radio", { name: /Pro/ }).isDisabled());
  await page.getByTestId("plan-unavailable-pro").filter({ hasText: "does not take payments" }).waitFor();
  await page.getByTestId("plan-fallback").waitFor();
  step("sign-up: Pro cannot be chosen with billing off, and says so");

  // --- a weak password is refused with the reason; a strong one works -------
  const email = `lena-${Date.now()}@example.com`;
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill("1234567890");
  // The meter (loaded on demand) explains it before sending…
  await page.getByTestId("password-advice").filter({ hasText: /common password/i }).waitFor();
  assert.equal(await page.getByRole("meter", { name: "Strength", exact: true }).getAttribute("aria-valuetext"), "Very weak");
  await shot(page, "signup-desktop");
  await page.getByRole("button", { name: "Sign up" }).click();
  // …and the server refuses it, saying why and what to do.
  const refusal = page.getByRole("alert");
  await refusal.filter({ hasText: "too easy to guess" }).waitFor();
  assert.match(await refusal.innerText(), /common password[\s\S]*unrelated words/);
  assert.ok(page.url().endsWith("/signup?plan=pro"), page.url());
  step("weak password refused with the reason");
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByTestId("password-advice").filter({ hasText: "Strong enough." }).waitFor();
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.waitForURL("**/chat");
  step("strong password: signed up");

  await pp.goto(off.url + "/signup?plan=free");
  await pp.getByTestId("plan-picker").waitFor();
  await shot(pp, "signup-phone");

  // --- example prompts on the empty chat send a message ---------------------
  await page.getByTestId("empty-chat").waitFor();
  const examples = page.getByTestId("example-prompt");
  assert.ok((await examples.count()) >= 3);
  await model.push({ text: ["Here are ", "the primes."] });
  const prompt = (await examples.nth(1).locator("span").nth(1).textContent()).trim();
  await examples.nth(1).click();
  await page.getByTestId("empty-chat").waitFor({ state: "detached" });
  await page.getByText(prompt).first().waitFor();
  await page.getByTestId("assistant-message").last().getByText("Here are the primes.").waitFor({ timeout: 120_000 });
  step("an example prompt was sent and answered");

  // --- the Account page: usage in money, tokens and storage; billing off ----
  await page.getByRole("link", { name: "Account", exact: true }).click();
  await page.getByTestId("usage").waitFor();
  assert.match(await page.getByTestId("usage-cost").innerText(), /^\$\d+\.\d{2,4}/);
  assert.match(await page.getByTestId("usage-tokens-text").innerText(), /^[\d,]+ of 1,000,000$/);
  assert.match(await page.getByTestId("usage-storage-text").innerText(), / of 1 GB$/);
  assert.ok((await page.getByRole("meter", { name: "Storage" }).count()) === 1);
  await page.getByTestId("billing-off").waitFor();
  assert.ok(await page.getByRole("button", { name: "Manage billing" }).isDisabled(), "disabled up front, not after a click");
  assert.ok(await page.getByRole("button", { name: "Upgrade to Pro" }).isDisabled());
  await page.getByTestId("plan-pro").getByText("does not take payments").waitFor();
  step("account: usage bars; billing buttons disabled with the reason");
  await shot(page, "account-landing-desktop");
  const ppAccount = await phone.newPage();
  await ppAccount.goto(off.url + "/signin");
  await ppAccount.getByLabel("Email").fill(email);
  await ppAccount.getByLabel("Password").fill(PASSWORD);
  await ppAccount.getByRole("button", { name: "Sign in" }).click();
  await ppAccount.waitForURL("**/chat");
  await ppAccount.goto(off.url + "/account");
  await ppAccount.getByTestId("usage").waitFor();
  assert.ok(await ppAccount.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), "no sideways scroll at 390 px");
  await shot(ppAccount, "account-landing-phone");

  // Signed in, `/` is the chat.
  await page.goto(off.url + "/");
  await page.waitForURL("**/chat");

  // --- billing on: choose Pro on the landing page, sign up, pay -------------
  const buyer = await browser.newContext({ viewport: DESKTOP });
  const bp = await buyer.newPage();
  bp.on("pageerror", (e) => errors.push(String(e)));
  await bp.goto(on.url + "/");
  await bp.getByTestId("landing-plans").waitFor();
  assert.equal(await bp.getByTestId("landing-billing-off").count(), 0);
  await bp.getByRole("link", { name: "Choose Pro" }).click();
  await bp.waitForURL("**/signup?plan=pro");
  await bp.getByTestId("plan-picker").waitFor();
  assert.ok(await bp.getByRole("radio", { name: /Pro/ }).isChecked(), "the plan chosen on the landing page");
  await bp.getByLabel("Email").fill(`payer-${Date.now()}@example.com`);
  await bp.getByLabel("Password").fill(PASSWORD);
  await bp.getByRole("button", { name: "Sign up and pay for Pro" }).click();
  await bp.waitForURL(`${stripe.url}/pay/**`);
  await bp.getByText("Fake Stripe Checkout").waitFor();
  assert.ok(bp.url().endsWith("price=price_pro_e2e"), bp.url());
  const session = stripe.requests.find((r) => r.path === "/v1/checkout/sessions");
  assert.equal(session.form.customer, "cus_e2e");
  assert.match(session.form.success_url, /\/account\?checkout=success$/);
  step("billing on: Pro chosen on the landing page → sign-up → Stripe Checkout");

  // Back from Stripe: the Account page thanks, and Manage billing opens the portal.
  await bp.goto(on.url + "/account?checkout=success");
  await bp.getByTestId("checkout-success").waitFor();
  assert.equal(await bp.getByTestId("billing-off").count(), 0);
  assert.ok(await bp.getByRole("button", { name: "Upgrade to Pro" }).isEnabled());
  await bp.getByRole("button", { name: "Manage billing" }).click();
  await bp.waitForURL(`${stripe.url}/portal/**`);
  step("billing on: Manage billing → the Stripe portal");

  assert.deepEqual(errors, []);
  step("passed");
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await browser.close();
  await off.stop();
  await on.stop();
  stripe.stop();
  model.stop();
}
process.exit(failed ? 1 : 0);
