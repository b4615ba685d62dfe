// Castellan's login, SSO and logout pages in a real browser (Debian's Chromium).
// Run through tests/browser/run.sh.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  USERS, freePort, launchBrowser, noHorizontalScroll, realProblems, shot,
  startApp, startCastellan, watchProblems,
} from '../lib/harness.mjs';

let cas;
let app;
let browser;

before(async () => {
  const port = await freePort();
  let appPort = await freePort();
  while (appPort === port) appPort = await freePort();
  app = await startApp({ port: appPort, casBase: `http://127.0.0.1:${port}/cas` });
  cas = await startCastellan({ port, appPort });
  browser = await launchBrowser();
});

after(async () => {
  // each step on its own: a failure in one must not leave the others running
  await browser?.close().catch((e) => console.error('closing chromium:', e));
  const exit = await cas?.stop().catch((e) => console.error('stopping castellan:', e));
  await app?.stop().catch((e) => console.error('stopping the app:', e));
  if (exit && exit.signal === null && exit.code !== 0) {
    console.error(`castellan exited with code ${exit.code} on SIGTERM (see ${cas.logPath})`);
  }
});

// ------------------------------------------------------------------ helpers

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 375, height: 812 };

/** A fresh browser context (own cookie jar) and page; a screenshot if `fn` fails. */
async function withPage(name, options, fn) {
  const context = await browser.newContext({ viewport: DESKTOP, ...options });
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

/** Runs `action` (a click, a key press) and returns the response to the POST of the login form. */
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

/** What Chromium's accessibility tree says about the element at `selector`. */
async function axNode(page, selector) {
  const cdp = await page.context().newCDPSession(page);
  try {
    const { root } = await cdp.send('DOM.getDocument', { depth: 0 });
    const { nodeId } = await cdp.send('DOM.querySelector', { nodeId: root.nodeId, selector });
    assert.ok(nodeId, `no element ${selector}`);
    const { nodes } = await cdp.send('Accessibility.getPartialAXTree', { nodeId, fetchRelatives: false });
    const n = nodes[0];
    const prop = (name) => n.properties?.find((p) => p.name === name)?.value?.value;
    return {
      role: n.role?.value,
      name: n.name?.value ?? '',
      description: n.description?.value ?? '',
      invalid: prop('invalid'),
      required: prop('required'),
    };
  } finally {
    await cdp.detach().catch(() => {});
  }
}

async function focusedId(page) {
  return page.evaluate(() => document.activeElement?.id || document.activeElement?.className || document.activeElement?.tagName);
}

/** Computed outline of the focused element; fails unless there is a visible one. */
async function assertVisibleFocus(page, what) {
  const o = await page.evaluate(() => {
    const s = getComputedStyle(document.activeElement);
    return { id: document.activeElement.id, style: s.outlineStyle, width: s.outlineWidth, color: s.outlineColor,
      focusVisible: document.activeElement.matches(':focus-visible') };
  });
  assert.ok(o.focusVisible, `${what}: not :focus-visible after keyboard navigation (${JSON.stringify(o)})`);
  assert.notEqual(o.style, 'none', `${what}: no focus outline (${JSON.stringify(o)})`);
  assert.ok(parseFloat(o.width) > 0, `${what}: focus outline of width ${o.width}`);
  assert.ok(!/rgba\(.*, 0\)$/.test(o.color) && o.color !== 'transparent', `${what}: transparent outline ${o.color}`);
}

async function assertNoHorizontalScroll(page, where) {
  const m = await noHorizontalScroll(page);
  // Against the layout viewport: with isMobile, Chromium zooms out to fit
  // wide content, so innerWidth grows with it and could hide the overflow.
  const limit = Math.min(m.innerWidth, m.clientWidth);
  assert.ok(m.scrollWidth <= limit,
    `${where}: horizontal scroll (scrollWidth ${m.scrollWidth} > ${limit}, innerWidth ${m.innerWidth}, clientWidth ${m.clientWidth})`);
}

/** Every element of `selector` lies within the viewport's width. */
async function assertWithinWidth(page, selectors, where) {
  const width = page.viewportSize().width;
  for (const sel of selectors) {
    const box = await page.locator(sel).first().boundingBox();
    assert.ok(box, `${where}: ${sel} not rendered`);
    assert.ok(box.x >= 0 && box.x + box.width <= width + 0.5,
      `${where}: ${sel} at x=${box.x} width=${box.width} sticks out of the ${width}px viewport`);
  }
}

function assertNoProblems(problems, documentUrls, where) {
  const real = realProblems(problems, documentUrls);
  assert.deepEqual(real, [], `${where}: console errors / page errors / CSP violations`);
}

async function castgc(context) {
  return (await context.cookies(cas.base + '/')).find((c) => c.name === 'CASTGC');
}

/** Logs in through the form on the current page, expecting to leave Castellan for the app. */
async function loginToApp(page, user = USERS.casuser) {
  await fillLogin(page, user);
  await Promise.all([
    page.waitForURL((u) => u.href.startsWith(app.origin), { waitUntil: 'load' }),
    page.getByRole('button', { name: 'Sign in' }).click(),
  ]);
}

// -------------------------------------------------------------------- tests

test('login page: labels, keyboard-only login, visible focus, no console errors or CSP violations, layout at 1280 and 375 px', async () => {
  await withPage('login-desktop', { viewport: DESKTOP }, async ({ page, problems }) => {
    const response = await page.goto(loginUrl());
    assert.equal(response.status(), 200);
    const csp = response.headers()['content-security-policy'] || '';
    assert.match(csp, /script-src 'self'/, 'a strict CSP header');
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, 'no unsafe-inline/unsafe-eval in the CSP');

    assert.ok(await page.getAttribute('html', 'lang'), '<html lang> is set');
    assert.match(await page.title(), /Sign in/);
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Sign in');

    // labels are associated with their inputs (getByLabel resolves <label for>)
    const username = page.getByLabel('Username');
    const password = page.getByLabel('Password', { exact: true });
    assert.equal(await username.getAttribute('id'), 'username');
    assert.equal(await password.getAttribute('id'), 'password');
    assert.equal(await password.getAttribute('type'), 'password');
    assert.equal(await username.getAttribute('autocomplete'), 'username');
    assert.equal(await password.getAttribute('autocomplete'), 'current-password');
    assert.equal((await axNode(page, '#username')).name, 'Username', 'accessible name of the username field');
    assert.equal((await axNode(page, '#password')).name, 'Password', 'accessible name of the password field');
    assert.equal(await page.locator('#fm1 input[name="execution"][type="hidden"]').count(), 1);

    // the stylesheet was loaded and applied under the CSP
    const styled = await page.evaluate(() => ({
      sheets: [...document.styleSheets].filter((s) => { try { return s.cssRules.length > 0; } catch { return false; } }).length,
      radius: getComputedStyle(document.querySelector('main')).borderTopLeftRadius,
      button: getComputedStyle(document.querySelector('#fm1 button[type=submit]')).backgroundColor,
    }));
    assert.ok(styled.sheets >= 1, 'castellan.css is loaded');
    assert.notEqual(styled.radius, '0px', 'the card is styled');

    await assertNoHorizontalScroll(page, 'login page at 1280px');
    await assertWithinWidth(page, ['main', '#username', '#password', '#fm1 button[type=submit]'], 'login page at 1280px');
    await shot(page, 'login-1280');

    // keyboard only: focus starts in the username field, the skip link comes before it
    await page.waitForFunction(() => document.activeElement?.id === 'username', null, { timeout: 5_000 })
      .catch(async () => assert.fail(`focus is not in the username field on load but on ${await focusedId(page)}`));
    await page.keyboard.press('Shift+Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.getAttribute('href')), '#main',
      'the element before the username field is the skip link');
    await assertVisibleFocus(page, 'skip link');
    const skipBox = await page.locator('.skip-link').boundingBox();
    assert.ok(skipBox && skipBox.x >= 0 && skipBox.y >= 0, `the focused skip link is on screen (${JSON.stringify(skipBox)})`);

    await page.keyboard.press('Tab');
    assert.equal(await focusedId(page), 'username', 'Tab goes to the username field');
    await assertVisibleFocus(page, 'username field');
    await page.keyboard.type(USERS.casuser.username);
    await page.keyboard.press('Tab');
    assert.equal(await focusedId(page), 'password', 'Tab goes to the password field');
    await assertVisibleFocus(page, 'password field');
    await page.keyboard.type(USERS.casuser.password);
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.type), 'submit', 'Tab goes to the Sign in button');
    await assertVisibleFocus(page, 'Sign in button');
    await shot(page, 'login-1280-focus-button');
    await page.keyboard.press('Shift+Tab');
    assert.equal(await focusedId(page), 'password');

    const result = await submitting(page, () => page.keyboard.press('Enter'));
    assert.equal(result.status(), 200);
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'You are signed in');
    assert.match(await page.locator('main').innerText(), /casuser/);
    const signOut = page.getByRole('link', { name: 'Sign out' });
    assert.equal(new URL(await signOut.getAttribute('href'), page.url()).href, `${cas.base}/logout`);
    assert.ok(await castgc(page.context()), 'an SSO cookie after the login');
    await assertNoHorizontalScroll(page, 'signed-in page at 1280px');
    await shot(page, 'signed-in-1280');

    assertNoProblems(problems, [], 'login page (desktop)');
  });

  await withPage('login-phone', { viewport: PHONE, hasTouch: true, isMobile: true, deviceScaleFactor: 2 }, async ({ page, problems }) => {
    await page.goto(loginUrl());
    await assertNoHorizontalScroll(page, 'login page at 375px');
    await assertWithinWidth(page, ['main', '#username', '#password', '#fm1 button[type=submit]'], 'login page at 375px');
    const button = await page.locator('#fm1 button[type=submit]').boundingBox();
    assert.ok(button.height >= 40, `touch target of the Sign in button is ${button.height}px high`);
    await shot(page, 'login-375');
    assertNoProblems(problems, [], 'login page (phone)');
  });

  await withPage('login-dark', { viewport: PHONE, colorScheme: 'dark' }, async ({ page, problems }) => {
    await page.goto(loginUrl());
    await assertNoHorizontalScroll(page, 'login page at 375px, dark');
    await shot(page, 'login-375-dark');
    assertNoProblems(problems, [], 'login page (dark)');
  });
});

test('wrong password: generic 401 error tied to the fields, username kept, password cleared', async () => {
  await withPage('wrong-password', { viewport: PHONE }, async ({ page, problems }) => {
    const url = loginUrl();
    await page.goto(url);
    const firstExecution = await page.locator('input[name=execution]').inputValue();
    await fillLogin(page, { username: USERS.casuser.username, password: 'not-the-password' });
    const response = await submitting(page, () => page.getByRole('button', { name: 'Sign in' }).click());
    assert.equal(response.status(), 401);
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Sign in', 'the form is shown again');

    const alert = page.getByRole('alert');
    assert.equal(await alert.count(), 1, 'one role=alert element');
    assert.equal(await alert.getAttribute('id'), 'login-error');
    const message = (await alert.innerText()).trim();
    assert.match(message, /username or password/i, 'a generic message');

    for (const field of ['#username', '#password']) {
      const el = page.locator(field);
      assert.equal(await el.getAttribute('aria-invalid'), 'true', `${field} aria-invalid`);
      const ids = (await el.getAttribute('aria-describedby') || '').split(/\s+/).filter(Boolean);
      assert.ok(ids.length > 0, `${field} has aria-describedby`);
      const described = await page.evaluate((list) => list.map((id) => document.getElementById(id)?.innerText ?? null).join(' '), ids);
      assert.ok(described.includes(message), `${field} aria-describedby=${ids} points to the message (got ${JSON.stringify(described)})`);
      const ax = await axNode(page, field);
      assert.ok(ax.description.includes(message), `accessible description of ${field} is the message (got ${JSON.stringify(ax.description)})`);
      assert.ok(ax.invalid && ax.invalid !== 'false', `${field} is invalid in the accessibility tree (got ${ax.invalid})`);
    }
    assert.equal(await page.locator('#username').inputValue(), USERS.casuser.username, 'the username is kept');
    assert.equal(await page.locator('#password').inputValue(), '', 'the password is cleared');
    assert.equal(await focusedId(page), 'password', 'focus goes to the password field');
    const secondExecution = await page.locator('input[name=execution]').inputValue();
    assert.ok(secondExecution && secondExecution !== firstExecution, 'a new execution token for the new form');

    await assertNoHorizontalScroll(page, 'error page at 375px');
    await assertWithinWidth(page, ['#login-error', '#username'], 'error page at 375px');
    await shot(page, 'wrong-password-375');

    // the same message for a user that does not exist: nothing is revealed
    await fillLogin(page, { username: 'no-such-user', password: 'whatever' });
    const unknown = await submitting(page, () => page.getByRole('button', { name: 'Sign in' }).click());
    assert.equal(unknown.status(), 401);
    assert.equal((await page.getByRole('alert').innerText()).trim(), message, 'same message for an unknown user');

    // the re-rendered form works
    await fillLogin(page, USERS.casuser);
    const ok = await submitting(page, () => page.getByRole('button', { name: 'Sign in' }).click());
    assert.equal(ok.status(), 200);
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'You are signed in');

    assertNoProblems(problems, [url], 'wrong password');
  });
});

test('throttling: after failures_per_user failures the next attempt gets 429 "Too many"', async () => {
  await withPage('throttled', { viewport: DESKTOP }, async ({ page, problems }) => {
    const url = loginUrl();
    await page.goto(url);
    for (let i = 1; i <= 3; i += 1) {
      await fillLogin(page, { username: USERS.bob.username, password: `wrong-${i}` });
      const r = await submitting(page, () => page.getByRole('button', { name: 'Sign in' }).click());
      assert.equal(r.status(), 401, `failure ${i} is a plain 401`);
      assert.doesNotMatch(await page.getByRole('alert').innerText(), /too many/i, `failure ${i} is not throttled yet`);
    }
    await fillLogin(page, { username: USERS.bob.username, password: 'wrong-4' });
    const throttled = await submitting(page, () => page.getByRole('button', { name: 'Sign in' }).click());
    assert.equal(throttled.status(), 429);
    const alert = page.getByRole('alert');
    assert.match(await alert.innerText(), /Too many/);
    assert.equal(await page.locator('#username').inputValue(), USERS.bob.username, 'the username is kept');
    assert.equal(await page.locator('#password').getAttribute('aria-describedby'), await alert.getAttribute('id'),
      'the password field is described by the throttling message');
    await assertNoHorizontalScroll(page, 'throttled page');
    await shot(page, 'throttled-1280');

    // even the right password is refused while throttled
    await fillLogin(page, USERS.bob);
    const still = await submitting(page, () => page.getByRole('button', { name: 'Sign in' }).click());
    assert.equal(still.status(), 429, 'the right password is refused while throttled');
    assert.equal(await castgc(page.context()), undefined, 'no SSO cookie while throttled');

    assertNoProblems(problems, [url], 'throttling');
  });
});

test('SSO: app → Castellan → app with a validated ticket; second visit goes straight back; CASTGC flags', async () => {
  await withPage('sso', { viewport: DESKTOP }, async ({ context, page, problems }) => {
    const service = app.url('/app/');
    const before = app.received.length;
    await page.goto(service);
    assert.ok(page.url().startsWith(`${cas.base}/login?`), `the app sent the browser to Castellan (at ${page.url()})`);
    assert.equal(new URL(page.url()).searchParams.get('service'), service);
    assert.match(await page.locator('main').innerText(), /demo-app/, 'the login page names the application');
    await shot(page, 'login-for-service-1280');

    await loginToApp(page);
    const landed = new URL(page.url());
    assert.equal(landed.origin + landed.pathname, service);
    const first = landed.searchParams.get('ticket');
    assert.match(first || '', /^ST-/, 'back on the app with a service ticket');
    assert.equal(await page.locator('#user').innerText(), 'casuser', 'the app validated the ticket');
    assert.equal(await page.locator('#attr-mail').innerText(), 'casuser@example.org', 'released attribute mail');
    assert.equal(app.received.length, before + 1, `one ticket received: ${JSON.stringify(app.hits)}`);
    assert.deepEqual({ ...app.received.at(-1) }, { method: 'GET', path: '/app/', ticket: first, user: 'casuser', error: null });
    await shot(page, 'app-after-login');

    const cookie = await castgc(context);
    assert.ok(cookie, 'CASTGC cookie set');
    assert.equal(cookie.httpOnly, true, 'CASTGC is HttpOnly');
    assert.equal(cookie.sameSite, 'Lax', 'CASTGC is SameSite=Lax');
    assert.equal(cookie.path, '/cas', 'CASTGC path is /cas');
    assert.equal(cookie.secure, false, 'not Secure on an http public_url');
    assert.equal(cookie.domain, '127.0.0.1', 'host-only cookie');
    assert.equal(await page.evaluate(() => document.cookie.includes('CASTGC')), false, 'not visible to scripts');

    // second visit: no form, straight back with a new ticket
    const response = await page.goto(loginUrl({ service }));
    let loginHop = response.request();
    while (loginHop.redirectedFrom()) loginHop = loginHop.redirectedFrom();
    assert.equal(loginHop.url(), loginUrl({ service }));
    assert.equal((await loginHop.response()).status(), 302, 'Castellan redirects without showing the form');
    const again = new URL(page.url());
    assert.equal(again.origin + again.pathname, service, `straight back on the app (at ${page.url()})`);
    const second = again.searchParams.get('ticket');
    assert.match(second || '', /^ST-/);
    assert.notEqual(second, first, 'a new ticket');
    assert.equal(await page.locator('#user').innerText(), 'casuser');
    assert.equal(app.received.length, before + 2);

    assertNoProblems(problems, [], 'SSO');
  });
});

test('logout: "You have signed out", CASTGC cleared, then the login form is shown again', async () => {
  await withPage('logout', { viewport: DESKTOP }, async ({ context, page, problems }) => {
    await page.goto(loginUrl());
    await fillLogin(page, USERS.casuser);
    await submitting(page, () => page.getByRole('button', { name: 'Sign in' }).click());
    assert.ok(await castgc(context), 'signed in');

    await Promise.all([
      page.waitForURL(`${cas.base}/logout`),
      page.getByRole('link', { name: 'Sign out' }).click(),
    ]);
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'You have signed out');
    assert.equal(await castgc(context), undefined, 'CASTGC is cleared');
    await assertNoHorizontalScroll(page, 'logout page');
    await shot(page, 'signed-out-1280');

    const service = app.url('/app/');
    const before = app.received.length;
    const response = await page.goto(loginUrl({ service }));
    assert.equal(response.status(), 200);
    assert.equal(page.url(), loginUrl({ service }), 'stays on the login page');
    assert.equal(await page.locator('#fm1').isVisible(), true, 'the form is shown again');
    assert.equal(app.received.length, before, 'no ticket sent to the app');

    await loginToApp(page);
    assert.equal(await page.locator('#user').innerText(), 'casuser', 'a new login works after logout');

    assertNoProblems(problems, [], 'logout');
  });
});

test('unregistered service: "Application not authorized", the browser stays on Castellan', async () => {
  await withPage('unregistered', { viewport: DESKTOP }, async ({ page, problems }) => {
    // same app, other host name: the pattern does not match, and a wrong redirect would be seen by the app
    const evil = `http://localhost:${new URL(app.origin).port}/app/`;
    const hits = app.hits.length;
    const url = loginUrl({ service: evil });
    const response = await page.goto(url);
    assert.equal(response.status(), 403);
    assert.equal(page.url(), url, 'the URL stays on Castellan');
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Application not authorized');
    assert.equal(await page.locator('#fm1').count(), 0, 'no login form for an unauthorized application');
    assert.equal(app.hits.length, hits, 'nothing reached the application');
    await assertNoHorizontalScroll(page, 'unauthorized page');
    await shot(page, 'unauthorized-1280');

    // with an SSO session too
    await page.goto(loginUrl());
    await fillLogin(page, USERS.casuser);
    await submitting(page, () => page.getByRole('button', { name: 'Sign in' }).click());
    const url2 = loginUrl({ service: 'https://evil.example.org/steal' });
    const r2 = await page.goto(url2);
    assert.equal(r2.status(), 403);
    assert.equal(page.url(), url2, 'the URL stays on Castellan with an SSO session');
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Application not authorized');
    assert.equal(app.hits.length, hits);

    assertNoProblems(problems, [url, url2], 'unregistered service');
  });
});

test('method=POST: the ticket is POSTed by the auto-submitting form; without JavaScript the user clicks Continue', async () => {
  const service = app.url('/app/post');

  await withPage('post-js', { viewport: DESKTOP }, async ({ page, problems }) => {
    const before = app.received.length;
    await page.goto(loginUrl({ service, method: 'POST' }));
    await loginToApp(page);
    assert.equal(page.url(), service, 'on the app, no ticket in the URL');
    assert.equal(await page.locator('#method').innerText(), 'POST');
    assert.equal(await page.locator('#user').innerText(), 'casuser');
    assert.equal(app.received.length, before + 1);
    const got = app.received.at(-1);
    assert.equal(got.method, 'POST');
    assert.match(got.ticket, /^ST-/);
    assert.equal(got.user, 'casuser', `ticket validated (${got.error})`);
    assertNoProblems(problems, [], 'method=POST with JavaScript');
  });

  await withPage('post-nojs', { viewport: DESKTOP, javaScriptEnabled: false }, async ({ page, problems }) => {
    const before = app.received.length;
    await page.goto(loginUrl({ service, method: 'POST' }));
    await fillLogin(page, USERS.casuser);
    const r = await submitting(page, () => page.getByRole('button', { name: 'Sign in' }).click());
    assert.equal(r.status(), 200);
    assert.ok(page.url().startsWith(cas.base), `still on Castellan without JavaScript (at ${page.url()})`);
    assert.equal(app.received.length, before, 'nothing posted yet');
    const form = page.locator('form[method=post]');
    assert.equal(await form.getAttribute('action'), service, 'the form posts to the service');
    assert.match(await page.locator('input[name=ticket][type=hidden]').inputValue(), /^ST-/);
    await assertNoHorizontalScroll(page, 'post page');
    await shot(page, 'post-continue-nojs-1280');

    await Promise.all([
      page.waitForURL(service),
      page.getByRole('button', { name: 'Continue' }).click(),
    ]);
    assert.equal(await page.locator('#method').innerText(), 'POST');
    assert.equal(await page.locator('#user').innerText(), 'casuser');
    assert.equal(app.received.length, before + 1);
    assert.equal(app.received.at(-1).user, 'casuser', `ticket validated (${app.received.at(-1).error})`);
    assertNoProblems(problems, [], 'method=POST without JavaScript');
  });
});

test('reused execution: replaying a used login form does not log in', async () => {
  await withPage('replay', { viewport: DESKTOP }, async ({ context, page, problems }) => {
    const service = app.url('/app/');
    const url = loginUrl({ service });
    await page.goto(url);
    const execution = await page.locator('input[name=execution]').inputValue();
    assert.ok(execution, 'the form has an execution token');
    const action = new URL(await page.locator('#fm1').getAttribute('action') || page.url(), page.url()).href;
    await loginToApp(page);
    const received = app.received.length;

    // 1. replay of the same form data (a "back and resubmit" without the SSO cookie)
    await context.clearCookies();
    const replay = await page.request.post(action, {
      form: { username: USERS.casuser.username, password: USERS.casuser.password, execution, submit: 'login' },
      maxRedirects: 0,
    });
    assert.notEqual(replay.status(), 302, `the replay is not redirected to the app (Location: ${replay.headers().location})`);
    assert.equal(replay.status(), 403, 'the replay is refused');
    assert.match(await replay.text(), /id="login-notice"/, 'the page says the form expired');
    assert.equal(await castgc(context), undefined, 'no SSO cookie from the replay');
    assert.equal(app.received.length, received, 'no ticket reached the app');

    // 2. the same in the browser: a login form whose execution is the used one
    await page.goto(url);
    await page.locator('input[name=execution]').evaluate((el, v) => { el.value = v; }, execution);
    await fillLogin(page, USERS.casuser);
    const r = await submitting(page, () => page.getByRole('button', { name: 'Sign in' }).click());
    assert.equal(r.status(), 403);
    assert.ok(page.url().startsWith(cas.base), `still on Castellan (at ${page.url()})`);
    const notice = page.locator('#login-notice');
    assert.equal(await notice.isVisible(), true, 'an expired-form notice');
    assert.match(await notice.innerText(), /expired|already used/i);
    assert.equal(await page.locator('#fm1').isVisible(), true, 'a new form to sign in again');
    assert.equal(await castgc(context), undefined, 'no SSO cookie');
    assert.equal(app.received.length, received);
    await shot(page, 'expired-form-1280');

    // ...and the new form works
    await loginToApp(page);
    assert.equal(await page.locator('#user').innerText(), 'casuser');

    assertNoProblems(problems, [action], 'reused execution');
  });
});
