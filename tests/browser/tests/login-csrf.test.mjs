// Login CSRF in a real browser (Debian's Chromium): a sign-in form posted to
// Castellan from another site must not sign the victim in (as the attacker),
// and the form's execution token is bound to the browser by the CASBROWSER
// cookie. Run through tests/browser/run.sh.
//
// Castellan is reached at http://127.0.0.1:PORT/cas, the attacker's page at
// http://localhost:PORT/: two different sites for Chromium.

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';
import {
  USERS, freePort, launchBrowser, realProblems, shot, startApp, startCastellan, watchProblems,
} from '../lib/harness.mjs';

let cas;
let app;
let attacker;
let browser;

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/**
 * The attacker's site at http://localhost:PORT/: GET /csrf serves `attacker.page`
 * (set by the test), every request is kept in `attacker.hits`.
 */
async function startAttacker(port) {
  const site = { origin: `http://localhost:${port}`, page: '', hits: [] };
  const server = http.createServer((req, res) => {
    site.hits.push(`${req.method} ${req.url}`);
    res.setHeader('Cache-Control', 'no-store');
    if (req.url === '/csrf') {
      res.setHeader('Content-Type', 'text/html; charset=utf-8');
      res.end(site.page);
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  site.stop = () => new Promise((resolve) => {
    server.closeAllConnections?.();
    server.close(() => resolve());
  });
  return site;
}

before(async () => {
  const used = new Set();
  const port = async () => {
    let p = await freePort();
    while (used.has(p)) p = await freePort();
    used.add(p);
    return p;
  };
  const casPort = await port();
  const appPort = await port();
  const attackerPort = await port();
  app = await startApp({ port: appPort, casBase: `http://127.0.0.1:${casPort}/cas` });
  attacker = await startAttacker(attackerPort);
  cas = await startCastellan({ port: casPort, appPort, logName: 'castellan-login-csrf.log' });
  browser = await launchBrowser();
});

after(async () => {
  // each step on its own: a failure in one must not leave the others running
  await browser?.close().catch((e) => console.error('closing chromium:', e));
  const exit = await cas?.stop().catch((e) => console.error('stopping castellan:', e));
  await app?.stop().catch((e) => console.error('stopping the app:', e));
  await attacker?.stop().catch((e) => console.error('stopping the attacker site:', e));
  if (exit && exit.signal === null && exit.code !== 0) {
    console.error(`castellan exited with code ${exit.code} on SIGTERM (see ${cas.logPath})`);
  }
});

// ------------------------------------------------------------------ helpers

async function withPage(name, fn) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(15_000);
  const problems = await watchProblems(context);
  const page = await context.newPage();
  try {
    await fn({ context, page, problems });
  } catch (err) {
    await shot(page, `FAILED-${name}`).catch(() => {});
    throw err;
  } finally {
    await context.close();
  }
}

const loginUrl = (params = {}) => {
  const u = new URL(`${cas.base}/login`);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  return u.href;
};

const cookie = async (context, name) => (await context.cookies(`${cas.base}/`)).find((c) => c.name === name);

/** The attacker's own login form, fetched outside the browser (with a CASBROWSER cookie of its own): its execution token. */
async function attackerToken(service) {
  const r = await fetch(loginUrl({ service }));
  const html = await r.text();
  assert.equal(r.status, 200, `attacker's GET of the login page: ${html.slice(0, 300)}`);
  const execution = /name="execution" value="([^"]+)"/.exec(html)?.[1];
  assert.ok(execution, 'the attacker got an execution token');
  return { execution };
}

/** Runs `action` and returns the response to the POST of a login form to Castellan. */
async function submitting(page, action) {
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST' && r.url().startsWith(`${cas.base}/login`)),
    action(),
  ]);
  await page.waitForLoadState('load');
  return response;
}

async function fillLogin(page, { username, password }) {
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password', { exact: true }).fill(password);
}

async function loginToApp(page, user = USERS.casuser) {
  await fillLogin(page, user);
  await Promise.all([
    page.waitForURL((u) => u.href.startsWith(app.origin), { waitUntil: 'load' }),
    page.getByRole('button', { name: 'Sign in' }).click(),
  ]);
}

// -------------------------------------------------------------------- tests

test('login CSRF: a sign-in form auto-posted from another site does not sign the victim in', async () => {
  await withPage('login-csrf', async ({ context, page, problems }) => {
    const service = app.url('/app/');
    const url = loginUrl({ service });

    // the attacker: a token (and a CASBROWSER cookie) of its own, then a page on its site
    const stolen = await attackerToken(service);
    attacker.page = `<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>Win a prize</title></head><body><h1>Win a prize</h1>
<form id="evil" method="post" action="${escapeHtml(url)}">
<input type="hidden" name="username" value="${escapeHtml(USERS.casuser.username)}">
<input type="hidden" name="password" value="${escapeHtml(USERS.casuser.password)}">
<input type="hidden" name="execution" value="${escapeHtml(stolen.execution)}">
<input type="hidden" name="submit" value="login">
</form>
<script>HTMLFormElement.prototype.submit.call(document.getElementById('evil'));</script>
</body></html>`;

    // the victim has been on Castellan's login page before (and so has a
    // CASBROWSER cookie of its own: checked by the next test)
    const first = await page.goto(url);
    assert.equal(first.status(), 200);
    assert.equal(await cookie(context, 'CASTGC'), undefined, 'the victim is not signed in');

    const statuses = [];
    page.on('response', (r) => statuses.push(`${r.request().method()} ${r.status()} ${r.url()}`));
    const received = app.received.length;
    const hits = app.hits.length;

    // the victim opens the attacker's page; it posts the form to Castellan at once
    const attackPage = `${attacker.origin}/csrf`;
    const response = await submitting(page, () => page.goto(attackPage));
    const sent = await response.request().allHeaders();
    assert.equal(sent.origin, attacker.origin, 'the POST came from the attacker\'s site');
    assert.equal(sent['sec-fetch-site'], 'cross-site', 'Chromium calls it cross-site');
    assert.ok(attacker.hits.includes('GET /csrf'), `the attacker's page was loaded (${attacker.hits})`);

    assert.notEqual(response.status(), 302,
      `the forged login is not redirected to the service (Location: ${response.headers().location})`);
    assert.equal(response.status(), 403, `the cross-site POST is refused (${statuses.join('; ')})`);
    assert.ok(page.url().startsWith(`${cas.base}/login`), `the browser is on Castellan's login page (at ${page.url()})`);
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Sign in');
    assert.equal(await page.locator('#fm1').isVisible(), true, 'the login form is shown');
    assert.match(await page.locator('#login-notice').innerText(), /sent from another site/);
    assert.equal(await page.locator('#username').inputValue(), '', 'the attacker\'s username is not filled in');
    assert.equal(await cookie(context, 'CASTGC'), undefined, 'no SSO cookie: the victim is not signed in');
    assert.equal(app.received.length, received, 'no ticket reached the service');
    assert.equal(app.hits.length, hits, 'no redirect to the service');
    assert.ok(!statuses.some((s) => s.startsWith(`GET 200 ${app.origin}`)), `no visit to the service: ${statuses.join('; ')}`);
    await shot(page, 'login-csrf-refused-1280');

    // the same token, in a form on Castellan's own site (no cross-site headers):
    // the token belongs to another browser
    const other = await attackerToken(service);
    await page.goto(url);
    await page.locator('input[name=execution]').evaluate((el, v) => { el.value = v; }, other.execution);
    await fillLogin(page, USERS.casuser);
    const foreign = await submitting(page, () => page.getByRole('button', { name: 'Sign in' }).click());
    assert.equal(foreign.status(), 403, 'a token from another browser is refused');
    assert.match(await page.locator('#login-notice').innerText(), /expired or was already used/);
    assert.equal(await cookie(context, 'CASTGC'), undefined, 'no SSO cookie from another browser\'s token');
    assert.equal(app.received.length, received, 'no ticket reached the service');

    // "Please sign in here": the form Castellan shows works
    await loginToApp(page);
    assert.equal(await page.locator('#user').innerText(), 'casuser');
    assert.ok(await cookie(context, 'CASTGC'), 'signed in by the victim\'s own form');

    assert.deepEqual(realProblems(problems, [url]), [], 'console errors / page errors / CSP violations');
  });
});

test('normal login still works: same-origin form post, ticket to the service, CASBROWSER HttpOnly and SameSite=Lax', async () => {
  await withPage('login-same-origin', async ({ context, page, problems }) => {
    const service = app.url('/app/');
    const before = app.received.length;
    await page.goto(service);
    assert.ok(page.url().startsWith(`${cas.base}/login?`), `the app sent the browser to Castellan (at ${page.url()})`);

    const browserCookie = await cookie(context, 'CASBROWSER');
    assert.ok(browserCookie, 'the login page sets a CASBROWSER cookie');
    assert.equal(browserCookie.httpOnly, true, 'CASBROWSER is HttpOnly');
    assert.equal(browserCookie.sameSite, 'Lax', 'CASBROWSER is SameSite=Lax');
    assert.equal(browserCookie.path, '/cas', 'CASBROWSER path is /cas');
    assert.ok(browserCookie.expires === -1, `CASBROWSER is a browser-session cookie (expires ${browserCookie.expires})`);
    assert.equal(await page.evaluate(() => document.cookie.includes('CASBROWSER')), false, 'not visible to scripts');

    await fillLogin(page, USERS.casuser);
    const [post] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && r.url().startsWith(`${cas.base}/login`)),
      page.waitForURL((u) => u.href.startsWith(app.origin), { waitUntil: 'load' }),
      page.getByRole('button', { name: 'Sign in' }).click(),
    ]);
    assert.equal(post.status(), 302, 'the login redirects to the service');
    const sent = await post.request().allHeaders();
    assert.equal(sent['sec-fetch-site'], 'same-origin', 'a same-origin post');

    const landed = new URL(page.url());
    assert.equal(landed.origin + landed.pathname, service);
    assert.match(landed.searchParams.get('ticket') || '', /^ST-/, 'back on the service with a ticket');
    assert.equal(await page.locator('#user').innerText(), 'casuser', 'the app validated the ticket');
    assert.equal(app.received.length, before + 1);
    assert.ok(await cookie(context, 'CASTGC'), 'CASTGC set');

    assert.deepEqual(realProblems(problems, []), [], 'console errors / page errors / CSP violations');
  });
});
