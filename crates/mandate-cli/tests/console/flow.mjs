// The console's browser test (issue 21), driven by tests/console_browser.rs.
//
// Headless Debian Chromium through playwright-core, one browser context per
// person, each with a CDP virtual authenticator (a platform passkey that
// verifies its user). Against a real `mandate serve` and real agents
// (`mandate mission call --wait`), it checks what a person would see:
//
//   alice enrolls a passkey → signs out → signs in with it → an agent's
//   refund escalates → her inbox shows it without a reload → she approves
//   with her passkey → the agent's waiting call completes (200);
//   a denial with a reason reaches the agent as `approval_denied` + reason;
//   bob (his own passkey) does not see alice's request;
//   a form posted to the console from another origin is refused;
//   alice's missions page lists her mission; she opens it and revokes it
//   after a confirmation page; it shows revoked, and the agent's next
//   call is refused (revoked);
//   an admin filters the audit log by the mission and opens the approval,
//   whose passkey signature verifies;
//   the admin's agents page lists alice's agent with its owner, and the
//   principals page lists alice;
//   the sign-in, inbox, missions, agents, principals and audit pages (and
//   the confirmations) have no serious or critical axe violations;
//   no console page trips its own Content-Security-Policy.
//
// Usage: node flow.mjs CONFIG.json — written by the Rust test; see there.
// Exits 0 after writing CONFIG.results; otherwise prints which step failed
// and why, and leaves a screenshot and the page's HTML beside the results.

import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { AxeBuilder } from '@axe-core/playwright';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const CHROMIUM = cfg.chromium;
const TIMEOUT = 20_000;
const results = { steps: [] };
const pages = [];
const agents = [];
let browser;
let foreign;

function fail(msg) {
  throw new Error(msg);
}

function log(msg) {
  process.stderr.write(`console-e2e: ${msg}\n`);
}

let current = '';
async function step(name, fn) {
  current = name;
  const t0 = Date.now();
  log(`${name} …`);
  const r = await fn();
  results.steps.push({ name, ms: Date.now() - t0 });
  return r;
}

// ---- the agent: `mandate mission call --wait`, in the background ----------

function agentCall(label, resourceId, amount, justification) {
  const data = path.join(cfg.work, `refund-${label}.json`);
  writeFileSync(data, JSON.stringify({ amount }) + '\n');
  const env = { ...process.env, MANDATE_SERVER: cfg.api, MANDATE_LOG: 'warn' };
  delete env.MANDATE_TOKEN;
  const child = spawn(
    cfg.bin,
    ['mission', 'call', '--state', cfg.alice.state, 'POST', `${cfg.api}/gw/billing/refunds/${resourceId}`,
      '--data', data, '--justification', justification, '--wait', '60'],
    { env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const call = { label, child, out: '', code: undefined };
  child.stdout.on('data', (b) => { call.out += b; });
  child.stderr.on('data', (b) => { call.out += b; });
  call.done = new Promise((resolve) => child.on('exit', (code) => { call.code = code; resolve(call); }));
  agents.push(call);
  return call;
}

async function finished(call, ms) {
  const timer = new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`the agent's call (${call.label}) did not finish within ${ms / 1000} s; output so far:\n${call.out}`)), ms));
  return Promise.race([call.done, timer]);
}

// ---- the CLI, as alice or an admin -----------------------------------------

function cli(token, args) {
  return new Promise((resolve) => {
    const env = { ...process.env, MANDATE_SERVER: cfg.api, MANDATE_LOG: 'warn', MANDATE_TOKEN: token };
    const child = spawn(cfg.bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b) => { out += b; });
    child.stderr.on('data', (b) => { err += b; });
    child.on('exit', (code) => resolve({ code, out, err }));
  });
}

async function approvalStatus(id) {
  const r = await cli(cfg.alice.token, ['--json', 'approvals', 'show', id]);
  if (r.code !== 0) fail(`mandate approvals show ${id} failed: ${r.err}`);
  const v = JSON.parse(r.out);
  return v.status ?? v.state ?? v.approval?.status;
}

// ---- a person's browser: own context, own passkey --------------------------

async function person(browser, name) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 }, locale: 'en-US' });
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  const who = { name, context, page, cspViolations: [], errors: [] };
  page.on('console', (m) => {
    const t = m.text();
    if (/Content[- ]Security[- ]Policy/i.test(t)) who.cspViolations.push(`${page.url()}: ${t}`);
    else if (m.type() === 'error') who.errors.push(`${page.url()}: ${t}`);
  });
  page.on('pageerror', (e) => who.errors.push(`${page.url()}: ${e.message}`));
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  who.credentials = async () => (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials;
  pages.push(who);
  return who;
}

function noCspViolations(who) {
  if (who.cspViolations.length) {
    fail(`${who.name}'s console pages broke their own Content-Security-Policy:\n  ${who.cspViolations.join('\n  ')}`);
  }
}

async function shot(page, name) {
  mkdirSync(cfg.screenshots, { recursive: true });
  await page.screenshot({ path: path.join(cfg.screenshots, `${name}.png`), fullPage: true });
}

async function accessible(page, what) {
  const r = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']).analyze();
  const bad = r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  results.axe = results.axe ?? {};
  results.axe[what] = r.violations.map((v) => `${v.impact} ${v.id}`);
  if (bad.length) {
    fail(`axe found serious/critical violations on the ${what} page:\n` +
      bad.map((v) => `  ${v.impact} ${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`).join('\n'));
  }
}

async function onInbox(page) {
  await page.waitForURL((u) => u.pathname === '/console/inbox');
  await page.locator('#approvals').waitFor({ state: 'attached' });
}

// The element of the request whose text has `justification`, appearing
// while the page stays loaded (a marker set on the window survives only
// without a reload or navigation).
async function arrives(page, justification) {
  await page.evaluate(() => { window.__mandateNoReload = true; });
  const item = page.locator('[data-approval-id]', { hasText: justification });
  try {
    await item.waitFor({ state: 'visible', timeout: TIMEOUT });
  } catch {
    fail(`the inbox did not show the request "${justification}" within ${TIMEOUT / 1000} s without a reload ` +
      `(server-sent events?); after a reload it ${await page.reload().then(() => item.count()) ? 'is there' : 'is not there either'}`);
  }
  if (!(await page.evaluate(() => window.__mandateNoReload === true))) {
    fail('the inbox page reloaded or navigated to show a new request; it must arrive live');
  }
  const id = await item.getAttribute('data-approval-id');
  if (!/^apr_/.test(id ?? '')) fail(`data-approval-id is "${id}", not apr_…`);
  return { item, id };
}

async function decided(item, status) {
  try {
    await item.and(item.page().locator(`[data-status="${status}"]`)).waitFor({ timeout: TIMEOUT });
  } catch {
    fail(`the request did not get data-status="${status}" (it has "${await item.getAttribute('data-status')}"); ` +
      `the page shows: ${(await item.innerText()).slice(0, 400)}`);
  }
}

// ---- another origin, for the cross-origin post -----------------------------

async function foreignSite() {
  let form = '';
  const srv = http.createServer((_, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(form);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: srv.address().port,
    set(html) { form = html; },
    close() { srv.close(); },
  };
}

function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
}

// ---- the flow --------------------------------------------------------------

async function main() {
  if (!existsSync(CHROMIUM)) {
    fail(`no Chromium at ${CHROMIUM}: install Debian's package \`chromium\` (apt-get install chromium; scripts/test.sh and .ci/run do)`);
  }
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
  foreign = await foreignSite();
  {
    const alice = await person(browser, 'alice');
    const { page } = alice;

    await step('an unauthenticated visit goes to the sign-in page', async () => {
      const r = await page.goto(`${cfg.origin}/console`);
      if (new URL(page.url()).pathname !== '/console/signin') {
        fail(`GET /console without a session ended at ${page.url()} (${r?.status()}), not /console/signin`);
      }
    });

    await step('alice enrolls a passkey from her one-time link', async () => {
      await page.goto(cfg.alice.enroll);
      await page.locator('#enroll').waitFor();
      await shot(page, 'enroll');
      await page.click('#enroll');
      await onInbox(page);
      const creds = await alice.credentials();
      if (creds.length !== 1) fail(`alice's authenticator holds ${creds.length} credentials after enrolling, not 1`);
      results.alice_credential = Buffer.from(creds[0].credentialId, 'base64').toString('base64url');
    });

    await step('the enrollment link is single-use', async () => {
      const r = await page.goto(cfg.alice.enroll);
      if (r.ok() && (await page.locator('#enroll').count())) await page.click('#enroll');
      const refused = page.locator('[data-code]:not([hidden])').first();
      try {
        await refused.waitFor({ state: 'visible' });
      } catch {
        fail(`the used enrollment link was not refused with a [data-code] (at ${page.url()})`);
      }
      if ((await alice.credentials()).length !== 1) fail('the used enrollment link registered another passkey');
      results.reused_enroll = { status: r.status(), code: await refused.getAttribute('data-code') };
      await page.goto(`${cfg.origin}/console/inbox`);
      await onInbox(page);
    });

    await step('alice signs out', async () => {
      const [resp] = await Promise.all([
        page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/console/signout'),
        page.locator('form#signout [type=submit], form#signout button').first().click(),
      ]);
      await page.waitForLoadState();
      if (resp.status() >= 400) fail(`signing out answered ${resp.status()}: ${(await resp.text()).match(/data-code="[^"]*"[^<]*/)?.[0]}`);
      await page.goto(`${cfg.origin}/console/inbox`);
      if (new URL(page.url()).pathname !== '/console/signin') {
        fail(`after signing out, the inbox answered at ${page.url()} instead of sending to /console/signin`);
      }
    });

    await step('the sign-in page: screenshot and accessibility', async () => {
      await page.locator('#signin').waitFor();
      await shot(page, 'signin');
      await accessible(page, 'sign-in');
    });

    await step('alice signs in with her passkey', async () => {
      if (await page.locator('#principal').count()) await page.fill('#principal', 'alice');
      await page.click('#signin');
      await onInbox(page);
    });

    // 1. Approve: the agent's waiting call completes.
    const approveWhy = 'ACME was billed twice for invoice 42';
    const first = agentCall('approve', '42', 75000, approveWhy);
    let approval;
    await step('an escalated refund appears in the inbox without a reload', async () => {
      approval = await arrives(page, approveWhy);
      const text = await approval.item.innerText();
      for (const want of ['refund', cfg.goal]) {
        if (!text.includes(want)) fail(`the request's item lacks "${want}":\n${text}`);
      }
      results.approved = approval.id;
    });

    await step('the inbox page: screenshot and accessibility', async () => {
      await shot(page, 'inbox');
      await accessible(page, 'inbox');
    });

    let approveUrls = [];
    await step('alice approves it, once, with her passkey', async () => {
      const posts = [];
      const seen = (req) => { if (req.method() === 'POST') posts.push(req.url()); };
      page.on('request', seen);
      await approval.item.locator('select[name=scope]').selectOption('once');
      await approval.item.locator('button[data-action=approve]').click();
      await decided(approval.item, 'approved');
      page.off('request', seen);
      approveUrls = posts.filter((u) => u.includes(approval.id));
      if (!approveUrls.length) fail('approving sent no POST naming the request');
    });

    await step("the agent's waiting call completes with 200", async () => {
      const c = await finished(first, 30_000);
      if (c.code !== 0 || !/\b200\b/.test(c.out)) fail(`the agent's call ended with exit ${c.code}:\n${c.out}`);
      if (!c.out.includes('issued')) fail(`the upstream's answer is not in the agent's output:\n${c.out}`);
    });

    // 2. Deny with a reason: the agent gets approval_denied and the reason.
    const denyWhy = 'ACME asked again for invoice 43';
    const reason = 'no ticket for this refund';
    const second = agentCall('deny', '43', 80000, denyWhy);
    let denyRequest;
    await step('alice denies another, with a reason', async () => {
      const d = await arrives(page, denyWhy);
      results.denied = d.id;
      const posts = [];
      const seen = (req) => { if (req.method() === 'POST') posts.push(req); };
      page.on('request', seen);
      await d.item.locator('input[name=reason]').fill(reason);
      await d.item.locator('button[data-action=deny]').click();
      await decided(d.item, 'denied');
      page.off('request', seen);
      denyRequest = posts.find((r) => r.url().includes(d.id)) ?? posts[0];
      if (!denyRequest) fail('denying sent no POST request');
      denyRequest = {
        url: denyRequest.url(),
        type: (await denyRequest.allHeaders())['content-type'] ?? '',
        body: denyRequest.postData() ?? '',
        id: d.id,
      };
      results.deny_request = { url: denyRequest.url, type: denyRequest.type };
    });

    await step('the agent gets approval_denied with the reason', async () => {
      const c = await finished(second, 30_000);
      if (c.code === 0) fail(`the denied call succeeded:\n${c.out}`);
      // `mission call` says it as `approval … was denied: REASON` (the
      // problem's code, approval_denied, in JSON output).
      if (!new RegExp(`(approval_denied|approval ${results.denied} was denied).*${reason}`).test(c.out)) {
        fail(`the agent's output does not say ${results.denied} was denied with the reason "${reason}":\n${c.out}`);
      }
    });

    // 3. A third request stays pending for the checks that follow.
    const pendingWhy = 'ACME disputes invoice 44';
    const third = agentCall('pending', '44', 90000, pendingWhy);
    const pending = await step('a third request arrives', async () => arrives(page, pendingWhy));
    results.pending = pending.id;

    await step("bob, with his own passkey, neither sees nor decides alice's requests", async () => {
      const bob = await person(browser, 'bob');
      await bob.page.goto(cfg.bob.enroll);
      await bob.page.click('#enroll');
      await onInbox(bob.page);
      const creds = await bob.credentials();
      if (creds.length !== 1) fail(`bob's authenticator holds ${creds.length} credentials, not 1`);
      // Give the live feed a moment to (wrongly) push anything.
      await bob.page.waitForTimeout(1500);
      for (const id of [pending.id, results.approved, results.denied]) {
        if (await bob.page.locator(`[data-approval-id="${id}"]`).count()) fail(`bob's inbox shows alice's request ${id}`);
      }
      const text = await bob.page.locator('#approvals').innerText();
      if (text.includes('ACME')) fail(`bob's inbox shows text of alice's requests:\n${text}`);
      if (!(await bob.page.locator('#empty').isVisible())) fail("bob's inbox shows no #empty although nothing waits for him");
      // Nor can he decide it by its URL, from his own signed-in page (his
      // session, his CSRF token, the console's origin): the decision URLs
      // alice's page used, aimed at her pending request.
      const tried = await bob.page.evaluate(async ({ urls, id }) => {
        const csrf = document.querySelector('meta[name=csrf]')?.content ?? '';
        const out = [];
        for (const u of urls) {
          const r = await fetch(u, {
            method: 'POST', credentials: 'same-origin',
            headers: { 'content-type': 'application/json', 'x-mandate-csrf': csrf },
            body: JSON.stringify(u.endsWith('/deny') ? { reason: 'bob was here' } : { scope: 'once' }),
          });
          const j = await r.json().catch(() => ({}));
          out.push({ url: u, status: r.status, code: j.code ?? null });
        }
        return out;
      }, {
        // Deny, and ask for an approval challenge (approving needs one).
        urls: [denyRequest.url, ...approveUrls.filter((u) => u.endsWith('/challenge'))]
          .map((u) => u.replaceAll(denyRequest.id, pending.id).replaceAll(results.approved, pending.id)),
        id: pending.id,
      });
      results.bob_tried = tried;
      for (const t of tried) {
        if (![403, 404].includes(t.status) || !t.code) fail(`bob, posting to ${t.url}, got ${t.status} (code ${t.code}), not 403/404 with a stable code`);
      }
      const st = await approvalStatus(pending.id);
      if (st !== 'pending') fail(`after bob's attempts, alice's ${pending.id} is ${st}, not pending`);
      noCspViolations(bob);
    });

    await step('a form posted from another origin is refused', async () => {
      // The console's own decision URLs (as alice's page just used them),
      // aimed at the pending request by a page of another origin, as a
      // plain HTML form: with alice's session cookie (from localhost:OTHER,
      // the same site, her SameSite=Strict cookie goes along) and even her
      // CSRF token as a form field, the Origin check alone must refuse it.
      const csrf = await page.locator('meta[name=csrf]').getAttribute('content').catch(() => null)
        ?? await page.locator('form#signout input[name=csrf]').inputValue().catch(() => '');
      const targets = [...new Set([denyRequest.url, ...approveUrls])]
        .map((u) => u.replaceAll(denyRequest.id, pending.id).replaceAll(results.approved, pending.id));
      results.cross_origin = [];
      for (const url of targets) {
        for (const host of ['localhost', '127.0.0.1']) {
          foreign.set(`<!doctype html><html lang="en"><title>Win a prize</title>
<form id="f" method="post" action="${esc(url)}"><input type="hidden" name="csrf" value="${esc(csrf)}">
<input type="hidden" name="reason" value="forged"><input type="hidden" name="scope" value="mission"><button>go</button></form>`);
          const evil = await alice.context.newPage();
          await evil.goto(`http://${host}:${foreign.port}/`);
          const [resp] = await Promise.all([
            evil.waitForResponse((r) => r.url() === url && r.request().method() === 'POST'),
            evil.click('#f button'),
          ]);
          await evil.waitForLoadState();
          // The stable code: a JSON problem's `code` (the decision URLs
          // answer fetch calls), or a console error page's [data-code].
          const body = await resp.text().catch(() => '');
          let code = null;
          try { code = JSON.parse(body).code ?? null; } catch { /* HTML */ }
          code = code ?? await evil.locator('[data-code]').first().getAttribute('data-code', { timeout: 2000 }).catch(() => null);
          results.cross_origin.push({ from: `http://${host}:${foreign.port}`, to: url, status: resp.status(), code });
          // From localhost:OTHER (same site) alice's cookie goes along: only
          // the Origin check stands, 403. From 127.0.0.1:OTHER (another
          // site) her SameSite=Strict cookie stays home: 401 or 403.
          const refused = host === 'localhost' ? [403] : [401, 403];
          if (!refused.includes(resp.status()) || !code) {
            fail(`a form posted from http://${host}:${foreign.port} to ${url} got ${resp.status()} (code ${code}), not ${refused.join(' or ')} with a stable problem code`);
          }
          await evil.close();
        }
      }
      const st = await approvalStatus(pending.id);
      if (st !== 'pending') fail(`after the cross-origin posts, ${pending.id} is ${st}, not pending`);
      if ((await page.locator(`[data-approval-id="${pending.id}"]`).getAttribute('data-status')) !== 'pending') {
        fail('the inbox shows the pending request decided after the cross-origin posts');
      }
    });

    await step('the pending request is denied from the CLI; the agent stops waiting', async () => {
      const r = await cli(cfg.alice.token, ['approvals', 'deny', pending.id, '--reason', 'test over']);
      if (r.code !== 0) fail(`mandate approvals deny failed: ${r.err}`);
      const c = await finished(third, 30_000);
      if (c.code === 0) fail(`the denied call succeeded:\n${c.out}`);
      // The decision reaches alice's open inbox too.
      const item = page.locator(`[data-approval-id="${pending.id}"]`);
      if (await item.count()) await decided(item, 'denied');
    });

    let missionId;
    await step('the missions page lists her mission: screenshot and accessibility', async () => {
      await page.goto(`${cfg.origin}/console/inbox`);
      await onInbox(page);
      await page.locator('nav a[href="/console/missions"]').click();
      await page.waitForURL((u) => u.pathname === '/console/missions');
      const row = page.locator('tr[data-mission-id]', { hasText: cfg.goal });
      if ((await row.count()) !== 1) fail(`the missions page does not list alice's mission "${cfg.goal}" once:\n${await page.locator('main').innerText()}`);
      missionId = await row.getAttribute('data-mission-id');
      if ((await row.getAttribute('data-state')) !== 'active') fail(`her mission is ${await row.getAttribute('data-state')}, not active`);
      for (const want of ['billing-bot', '/ ']) {
        if (!(await row.innerText()).includes(want)) fail(`the mission's row lacks "${want}": ${await row.innerText()}`);
      }
      results.mission = missionId;
      await shot(page, 'missions');
      await accessible(page, 'missions');
    });

    await step('alice opens her mission and revokes it after confirming', async () => {
      await page.locator(`tr[data-mission-id="${missionId}"] a`).first().click();
      await page.waitForURL((u) => u.pathname === `/console/missions/${missionId}`);
      const scope = await page.locator('#scope').innerText();
      if (!scope.includes('permit(')) fail(`the mission's page does not show its scope policy:\n${scope}`);
      await accessible(page, 'mission');
      await page.click('#revoke');
      await page.waitForURL((u) => u.pathname === `/console/missions/${missionId}/revoke`);
      await accessible(page, 'revoke confirmation');
      // Not revoked by opening the confirmation.
      const before = await cli(cfg.alice.token, ['--json', 'mission', 'show', missionId]);
      if (before.code !== 0 || JSON.parse(before.out).state !== 'active') fail(`after opening the confirmation the mission is not active: ${before.out}${before.err}`);
      await page.fill('#reason', 'the refunds are done');
      await page.locator('#confirm-form button[type=submit]').click();
      await page.waitForURL((u) => u.pathname === `/console/missions/${missionId}`);
      const state = page.locator('.mission[data-mission-id] .state');
      const text = await state.innerText();
      if ((await state.getAttribute('data-state')) !== 'ended' || !text.includes('revoked')) fail(`after revoking, the page shows "${text}", not ended (revoked)`);
      if (await page.locator('#revoke').count()) fail('a revoked mission still offers to revoke it');
    });

    await step("the agent's next call is refused: revoked", async () => {
      const c = await finished(agentCall('revoked', '45', 10, 'a small refund after the revocation'), 30_000);
      if (c.code === 0) fail(`the agent's call after the revocation succeeded:\n${c.out}`);
      if (!/revoked/i.test(c.out)) fail(`the agent's refused call does not say revoked:\n${c.out}`);
      results.revoked_call = c.out.trim().split('\n').slice(-1)[0];
    });

    noCspViolations(alice);
    if (alice.errors.length) results.page_errors = alice.errors;
  }
  {
    const root = await person(browser, 'admin');
    const { page } = root;

    await step("an admin opens Audit, filters by alice's mission and opens her approval: the signature verifies", async () => {
      await page.goto(cfg.admin.enroll);
      await page.locator('#enroll').waitFor();
      await page.click('#enroll');
      await onInbox(page);
      await page.locator('nav a[href="/console/audit"]').click();
      await page.waitForURL((u) => u.pathname === '/console/audit');
      const chain = await page.locator('#chain').innerText();
      if (!chain.includes('The chain verifies')) fail(`the audit page's status line says "${chain}", not that the chain verifies`);
      await accessible(page, 'audit');
      await page.fill('#audit-filter input[name=mission]', results.mission);
      await page.locator('#audit-filter button[type=submit]').click();
      await page.waitForURL((u) => u.pathname === '/console/audit' && u.searchParams.get('mission') === results.mission);
      const approval = page.locator('#records tr[data-kind="approval.approved"] a');
      if ((await approval.count()) < 1) fail(`filtered by mission ${results.mission}, the audit page lists no approval:\n${await page.locator('main').innerText()}`);
      await shot(page, 'audit');
      await approval.first().click();
      await page.waitForURL((u) => /^\/console\/audit\/\d+$/.test(u.pathname));
      const story = await page.locator('#story').innerText();
      if (!story.includes('signature verifies')) fail(`the approval's explanation does not say the signature verifies:\n${story}`);
      results.audit_explained = story.split('\n').find((l) => l.includes('signature verifies'));
      await accessible(page, 'audit record');
    });

    await step('an admin opens Agents and Principals and the revocation confirmations: screenshot and accessibility', async () => {
      await page.locator('nav a[href="/console/agents"]').click();
      await page.waitForURL((u) => u.pathname === '/console/agents');
      const row = page.locator('tr[data-agent="billing-bot"]');
      if ((await row.count()) !== 1) fail(`the agents page does not list billing-bot once:\n${await page.locator('main').innerText()}`);
      if (!(await row.innerText()).includes('alice')) fail(`billing-bot's row does not name its owner: ${await row.innerText()}`);
      await shot(page, 'agents');
      await accessible(page, 'agents');
      await row.locator('a.danger').click();
      await page.waitForURL((u) => u.pathname === '/console/agents/billing-bot/revoke');
      await accessible(page, 'agent revocation confirmation');
      await page.goto(`${cfg.origin}/console/principals`);
      if ((await page.locator('tr[data-principal="alice"]').count()) !== 1) fail(`the principals page does not list alice:\n${await page.locator('main').innerText()}`);
      await accessible(page, 'principals');
      await page.locator('tr[data-principal="alice"] a.danger').click();
      await page.waitForURL((u) => u.pathname === '/console/principals/alice/revoke');
      await accessible(page, 'principal revocation confirmation');
    });

    noCspViolations(root);
    if (root.errors.length) results.admin_page_errors = root.errors;
  }
}

async function cleanup() {
  for (const a of agents) if (a.code === undefined) a.child.kill();
  foreign?.close();
  await browser?.close().catch(() => {});
}

const t0 = Date.now();
try {
  await main();
  results.ms = Date.now() - t0;
  writeFileSync(cfg.results, JSON.stringify(results, null, 2));
  log(`all steps passed in ${results.ms} ms`);
} catch (e) {
  process.stderr.write(`\nconsole browser test failed at: ${current}\n${e.stack ?? e}\n`);
  for (const [i, who] of pages.entries()) {
    try {
      const p = who.page;
      if (!p.isClosed()) {
        await p.screenshot({ path: path.join(cfg.work, `failure-${i}-${who.name}.png`), fullPage: true, timeout: 5000 });
        writeFileSync(path.join(cfg.work, `failure-${i}-${who.name}.html`), await p.content());
        process.stderr.write(`(${who.name}'s page ${p.url()}: ${cfg.work}/failure-${i}-${who.name}.{png,html})\n`);
      }
    } catch { /* the browser may be gone */ }
  }
  await cleanup();
  process.exit(1);
}
await cleanup();
process.exit(0);
