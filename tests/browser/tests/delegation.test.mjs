// Delegated authentication in a real browser (Debian's Chromium): a
// downstream Castellan lists an upstream CAS server (a second Castellan) on
// its login page as "Campus account"; the browser goes there, signs in, comes
// back through the downstream's /delegated/campus/callback to the service with
// a ticket, then has SSO at the downstream. And a forged callback's error page.
// After tests/e2e/test_delegation_cas.py. Run through tests/browser/run.sh.
//
// The upstream's public_url is http://localhost:PORT/cas, the downstream's
// http://127.0.0.1:PORT/cas: two sites with cookie jars of their own, as in a
// real deployment (cookies ignore the port: on one host name both Castellans'
// CASTGC, path /cas, would be one cookie).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  USERS, freePort, launchBrowser, noHorizontalScroll, realProblems, shot,
  startApp, startCastellan, watchProblems,
} from '../lib/harness.mjs';

let up; // the upstream CAS server ("Campus")
let down; // the Castellan under test, delegating to `up`
let app; // the service: its /rp/ recorder keeps every request, validates nothing
let browser;

const UPSTREAM = { name: 'campus', displayName: 'Campus account' };
const DOWNSTREAM_AT_UPSTREAM = 'Downstream portal'; // its [[services]] name at the upstream

before(async () => {
  const ports = new Set();
  while (ports.size < 3) ports.add(await freePort());
  const [downPort, upPort, appPort] = [...ports];
  app = await startApp({ port: appPort, casBase: `http://127.0.0.1:${downPort}/cas` });
  up = await startCastellan({
    port: upPort,
    appPort,
    host: 'localhost',
    logName: 'castellan-delegation-upstream.log',
    services: `
[[services]]
name = "${DOWNSTREAM_AT_UPSTREAM}"
protocol = "cas"
service = '^http://127\\.0\\.0\\.1:${downPort}/cas/delegated/${UPSTREAM.name}/callback\\?state=[A-Za-z0-9-]+$'
release = ["mail", "cn"]
`,
  });
  down = await startCastellan({
    port: downPort,
    appPort,
    logName: 'castellan-delegation-downstream.log',
    services: `
[[upstreams]]
name = "${UPSTREAM.name}"
protocol = "cas"
url = "${up.base}"
display_name = "${UPSTREAM.displayName}"
principal = "campus:{id}"
`,
  });
  browser = await launchBrowser();
});

after(async () => {
  // each step on its own: a failure in one must not leave the others running
  await browser?.close().catch((e) => console.error('closing chromium:', e));
  for (const [label, cas] of [['downstream', down], ['upstream', up]]) {
    const exit = await cas?.stop().catch((e) => console.error(`stopping the ${label} castellan:`, e));
    if (exit && exit.signal === null && exit.code !== 0) {
      console.error(`the ${label} castellan exited with code ${exit.code} on SIGTERM (see ${cas.logPath})`);
    }
  }
  await app?.stop().catch((e) => console.error('stopping the app:', e));
});

// ------------------------------------------------------------------ helpers

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 375, height: 812 };

/** A fresh browser context (own cookie jar) and page; a screenshot if `fn` fails. */
async function withPage(name, options, fn, { keep = false } = {}) {
  const context = await browser.newContext({ viewport: DESKTOP, ...options });
  context.setDefaultTimeout(15_000);
  const problems = await watchProblems(context);
  const page = await context.newPage();
  try {
    await fn({ context, page, problems });
  } catch (err) {
    await shot(page, `FAILED-delegation-${name}`).catch(() => {});
    await context.close();
    throw err;
  }
  if (keep) return { context, page, problems };
  await context.close();
  return null;
}

const loginUrl = (params = {}) => {
  const u = new URL(`${down.base}/login`);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  return u.href;
};

const callbackPrefix = () => `${down.base}/delegated/${UPSTREAM.name}/callback?state=`;

/** What Chromium's accessibility tree says about the element at `selector`. */
async function axNode(page, selector) {
  const cdp = await page.context().newCDPSession(page);
  try {
    const { root } = await cdp.send('DOM.getDocument', { depth: 0 });
    const { nodeId } = await cdp.send('DOM.querySelector', { nodeId: root.nodeId, selector });
    assert.ok(nodeId, `no element ${selector}`);
    const { nodes } = await cdp.send('Accessibility.getPartialAXTree', { nodeId, fetchRelatives: false });
    return { role: nodes[0].role?.value, name: nodes[0].name?.value ?? '' };
  } finally {
    await cdp.detach().catch(() => {});
  }
}

/** The focused element, described. */
async function focused(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    return {
      tag: el?.tagName.toLowerCase(),
      id: el?.id || '',
      type: el?.getAttribute('type') || '',
      text: (el?.innerText || '').trim(),
      href: el?.getAttribute('href') || '',
    };
  });
}

/** Computed outline of the focused element; fails unless there is a visible one. */
async function assertVisibleFocus(page, what) {
  const o = await page.evaluate(() => {
    const s = getComputedStyle(document.activeElement);
    return { style: s.outlineStyle, width: s.outlineWidth, color: s.outlineColor,
      focusVisible: document.activeElement.matches(':focus-visible') };
  });
  assert.ok(o.focusVisible, `${what}: not :focus-visible after keyboard navigation (${JSON.stringify(o)})`);
  assert.notEqual(o.style, 'none', `${what}: no focus outline (${JSON.stringify(o)})`);
  assert.ok(parseFloat(o.width) > 0, `${what}: focus outline of width ${o.width}`);
  assert.ok(!/rgba\(.*, 0\)$/.test(o.color) && o.color !== 'transparent', `${what}: transparent outline ${o.color}`);
}

/** No horizontal scroll: against the layout viewport too (see noHorizontalScroll on isMobile). */
async function assertNoHorizontalScroll(page, where) {
  const m = await noHorizontalScroll(page);
  const width = Math.min(m.innerWidth, m.clientWidth ?? m.innerWidth, page.viewportSize().width);
  assert.ok(m.scrollWidth <= width, `${where}: horizontal scroll (scrollWidth ${m.scrollWidth} > ${width}: ${JSON.stringify(m)})`);
}

/** Every element of `selectors` lies within the viewport's width. */
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
  assert.deepEqual(realProblems(problems, documentUrls), [], `${where}: console errors / page errors / CSP violations`);
}

async function cookie(context, base, name) {
  return (await context.cookies(`${base}/`)).find((c) => c.name === name);
}

/** The main-frame navigations of `page` ({method, url}), recorded from now on. */
function recordNavigations(page) {
  const navs = [];
  page.on('request', (r) => {
    if (r.isNavigationRequest() && r.frame() === page.mainFrame()) navs.push({ method: r.method(), url: r.url() });
  });
  return navs;
}

/** The hops of the redirect chain that ended in `response`: [{method, url, status}], first hop first. */
async function redirectChain(response) {
  const hops = [];
  for (let r = response.request(); r; r = r.redirectedFrom()) {
    hops.unshift({ method: r.method(), url: r.url(), status: (await r.response())?.status() ?? null });
  }
  return hops;
}

/** CAS 3.0 serviceValidate (XML) at the downstream, from Node. */
async function serviceValidate(service, ticket) {
  const u = new URL(`${down.base}/p3/serviceValidate`);
  u.searchParams.set('service', service);
  u.searchParams.set('ticket', ticket);
  const r = await fetch(u);
  const xml = await r.text();
  const user = /<cas:user>([^<]*)<\/cas:user>/.exec(xml)?.[1] ?? null;
  const failure = /<cas:authenticationFailure\s+code="([^"]+)"/.exec(xml)?.[1] ?? null;
  const attr = (name) => new RegExp(`<cas:${name}>([^<]*)</cas:${name}>`).exec(xml)?.[1] ?? null;
  return { status: r.status, xml, user, failure, attr };
}

/** The one request the service got since `before` (an index into app.rp), with a ticket. */
function ticketReceived(before, service) {
  const got = app.rp.slice(before);
  assert.equal(got.length, 1, `one request reached the service: ${JSON.stringify(got)}`);
  const path = new URL(service).pathname;
  assert.equal(got[0].method, 'GET');
  assert.equal(got[0].path, path);
  assert.match(got[0].query.ticket || '', /^ST-/, `a service ticket: ${JSON.stringify(got[0])}`);
  return got[0].query.ticket;
}

// the service of these tests: the app's request recorder (no validation of its own)
const service = () => app.url('/rp/delegated');

// the browser context signed in through the upstream (test 2), reused by test 3
let signedIn = null;
let delegatedLoginRan = false; // test 2 ran (a --test-name-pattern may leave it out)

// -------------------------------------------------------------------- tests

test('login page for a service shows a keyboard-reachable "Campus account" link; 375 px, CSP, console', async () => {
  await withPage('login-page', { viewport: DESKTOP }, async ({ page, problems }) => {
    const url = loginUrl({ service: service() });
    const response = await page.goto(url);
    assert.equal(response.status(), 200);
    assert.match(response.headers()['content-security-policy'] || '', /script-src 'self'/, 'the strict CSP');
    assert.match(await page.locator('main').innerText(), /to continue to/, 'a login page for a service');

    const nav = page.locator('nav.upstreams');
    assert.equal(await nav.count(), 1, 'a <nav class="upstreams">');
    assert.ok(await nav.getAttribute('aria-label'), 'the upstreams <nav> is labelled');
    const link = page.getByRole('link', { name: UPSTREAM.displayName, exact: true });
    assert.equal(await link.count(), 1, `one link named "${UPSTREAM.displayName}"`);
    assert.equal(await link.isVisible(), true, 'the link is visible');
    assert.equal(await nav.getByRole('link', { name: UPSTREAM.displayName }).count(), 1, 'the link is in the upstreams <nav>');
    assert.equal(await link.evaluate((el) => el.tagName), 'A', 'a real link: an <a>');
    const href = new URL(await link.getAttribute('href'), page.url());
    assert.equal(href.origin + href.pathname, `${down.base}/login`, `the link goes to the downstream's /login (${href})`);
    assert.equal(href.searchParams.get('client_name'), UPSTREAM.name);
    assert.equal(href.searchParams.get('service'), service(), 'the service is kept');
    const ax = await axNode(page, 'nav.upstreams a');
    assert.equal(ax.role, 'link', 'role link in the accessibility tree');
    assert.equal(ax.name, UPSTREAM.displayName, 'accessible name of the upstream link');

    await assertNoHorizontalScroll(page, 'login page at 1280px');
    await shot(page, 'delegation-login-1280');

    // keyboard: username (autofocus) → password → Sign in → Campus account
    await page.waitForFunction(() => document.activeElement?.id === 'username', null, { timeout: 5_000 })
      .catch(async () => assert.fail(`focus is not in the username field on load but on ${JSON.stringify(await focused(page))}`));
    await page.keyboard.press('Tab');
    assert.equal((await focused(page)).id, 'password', 'Tab from the username goes to the password field');
    await page.keyboard.press('Tab');
    const button = await focused(page);
    assert.deepEqual([button.tag, button.type, button.text], ['button', 'submit', 'Sign in'],
      'Tab from the password field goes to the Sign in button');
    await page.keyboard.press('Tab');
    const onLink = await focused(page);
    assert.deepEqual([onLink.tag, onLink.text], ['a', UPSTREAM.displayName],
      `Tab from the Sign in button goes to the "${UPSTREAM.displayName}" link (got ${JSON.stringify(onLink)})`);
    await assertVisibleFocus(page, `"${UPSTREAM.displayName}" link`);
    await shot(page, 'delegation-login-1280-focus-upstream');
    await page.keyboard.press('Shift+Tab');
    assert.equal((await focused(page)).text, 'Sign in', 'Shift+Tab goes back to the Sign in button');
    await page.keyboard.press('Tab');

    // Enter on the focused link leaves for the upstream's login page
    await Promise.all([
      page.waitForURL((u) => u.href.startsWith(`${up.base}/login?`), { waitUntil: 'load' }),
      page.keyboard.press('Enter'),
    ]);
    assert.equal(await page.locator('#fm1').isVisible(), true, 'the upstream\'s login form');

    assertNoProblems(problems, [], 'login page with an upstream (desktop)');
  });

  await withPage('login-phone', { viewport: PHONE, hasTouch: true, isMobile: true, deviceScaleFactor: 2 }, async ({ page, problems }) => {
    await page.goto(loginUrl({ service: service() }));
    const link = page.getByRole('link', { name: UPSTREAM.displayName, exact: true });
    assert.equal(await link.isVisible(), true, 'the link is visible at 375px');
    await assertNoHorizontalScroll(page, 'login page with an upstream at 375px');
    await assertWithinWidth(page, ['main', '#fm1 button[type=submit]', 'nav.upstreams', 'nav.upstreams a'],
      'login page with an upstream at 375px');
    const box = await link.boundingBox();
    assert.ok(box.height >= 24, `touch target of the "${UPSTREAM.displayName}" link is ${box.height}px high (WCAG 2.5.8: 24)`);
    await shot(page, 'delegation-login-375');
    assertNoProblems(problems, [], 'login page with an upstream (phone)');
  });
});

test('"Campus account" → the upstream\'s login page → casuser/Mellon + Enter → callback → service with a ticket for campus:casuser', async () => {
  delegatedLoginRan = true;
  signedIn = null;
  signedIn = await withPage('delegated-login', { viewport: DESKTOP }, async ({ context, page, problems }) => {
    const navs = recordNavigations(page);
    const svc = service();
    await page.goto(loginUrl({ service: svc }));
    await Promise.all([
      page.waitForURL((u) => u.href.startsWith(`${up.base}/login?`), { waitUntil: 'load' }),
      page.getByRole('link', { name: UPSTREAM.displayName, exact: true }).click(),
    ]);

    // at the upstream: its login form, for the downstream's callback with a one-time state
    const at = new URL(page.url());
    const callback = at.searchParams.get('service') || '';
    assert.ok(callback.startsWith(callbackPrefix()),
      `the upstream is asked to come back to ${callbackPrefix()}… (service=${callback})`);
    assert.match(new URL(callback).searchParams.get('state'), /^[A-Za-z0-9-]{16,64}$/, 'a random state');
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Sign in',
      'the upstream shows its login form, not an error page');
    assert.match(await page.locator('main').innerText(), new RegExp(DOWNSTREAM_AT_UPSTREAM),
      'the upstream\'s page names the downstream as the application');
    const binding = await cookie(context, down.base + '/delegated', 'CASDELEG');
    assert.ok(binding?.value, 'the downstream bound the login to this browser (CASDELEG)');
    assert.equal(binding.httpOnly, true, 'CASDELEG is HttpOnly');
    await shot(page, 'delegation-upstream-login-1280');

    // type casuser / Mellon, then Enter
    await page.waitForFunction(() => document.activeElement?.id === 'username', null, { timeout: 5_000 })
      .catch(async () => assert.fail(`focus is not in the upstream's username field but on ${JSON.stringify(await focused(page))}`));
    await page.keyboard.type(USERS.casuser.username);
    await page.keyboard.press('Tab');
    assert.equal((await focused(page)).id, 'password');
    await page.keyboard.type(USERS.casuser.password);
    const before = app.rp.length;
    const [landing] = await Promise.all([
      page.waitForResponse((r) => r.request().isNavigationRequest() && r.url().startsWith(app.origin)),
      page.keyboard.press('Enter'),
    ]).catch(async (e) => assert.fail(`the service was not reached (at ${page.url()}, `
      + `"${await page.locator('h1').first().innerText().catch(() => '?')}"): ${e.message.split('\n')[0]}`));
    await page.waitForURL((u) => u.href.startsWith(app.origin), { waitUntil: 'load' });

    // upstream POST /login → 302 → downstream callback (with the upstream's ticket) → 302 → service
    const hops = await redirectChain(landing);
    const describe = JSON.stringify(hops.map((h) => `${h.method} ${h.url.replace(/ticket=[^&]+/, 'ticket=…')} ${h.status}`));
    assert.equal(hops.length, 3, `three hops: ${describe}`);
    assert.equal(hops[0].method, 'POST');
    assert.ok(hops[0].url.startsWith(`${up.base}/login`), `the login form posts to the upstream: ${describe}`);
    assert.equal(hops[0].status, 302, `the upstream accepts the password: ${describe}`);
    assert.ok(hops[1].url.startsWith(callback) && /[?&]ticket=ST-/.test(hops[1].url),
      `back at the downstream's callback with the upstream's ticket: ${describe}`);
    assert.equal(hops[1].status, 302, `the callback redirects: ${describe}`);
    assert.equal(landing.status(), 200);

    const landed = new URL(page.url());
    assert.equal(landed.origin + landed.pathname, svc, `on the service (at ${page.url()})`);
    const ticket = landed.searchParams.get('ticket');
    assert.match(ticket || '', /^ST-/, 'with a service ticket');
    assert.equal(ticketReceived(before, svc), ticket, 'the service recorded that ticket');
    assert.equal(await page.locator('#p-ticket').innerText(), ticket);
    assert.equal(navs.filter((n) => n.url.startsWith(app.origin)).length, 1, 'one visit to the service');

    const v = await serviceValidate(svc, ticket);
    assert.equal(v.status, 200);
    assert.equal(v.user, 'campus:casuser', `serviceValidate names the mapped principal: ${v.xml.slice(0, 600)}`);
    assert.equal((await serviceValidate(svc, ticket)).failure, 'INVALID_TICKET', 'the ticket is single-use');

    // one SSO session per site; the binding cookie is gone
    assert.ok(await cookie(context, down.base, 'CASTGC'), 'the downstream opened its SSO session (CASTGC on 127.0.0.1)');
    assert.ok(await cookie(context, up.base, 'CASTGC'), 'the upstream has its own (CASTGC on localhost)');
    assert.equal(await cookie(context, down.base + '/delegated', 'CASDELEG'), undefined, 'CASDELEG is cleared');
    await shot(page, 'delegation-service-after-login');

    assertNoProblems(problems, [], 'delegated login');
  }, { keep: true });
});

test('SSO after the delegated login: /login for the same service redirects straight back with a ticket, no form', async (t) => {
  if (!delegatedLoginRan) {
    t.skip('needs the signed-in browser of the "Campus account" login test, which did not run');
    return;
  }
  assert.ok(signedIn, 'needs the signed-in browser of the previous test, which failed');
  const { context, page, problems } = signedIn;
  try {
    const svc = service();
    const navs = recordNavigations(page);
    const before = app.rp.length;
    const url = loginUrl({ service: svc });
    const response = await page.goto(url);
    const hops = await redirectChain(response);
    assert.deepEqual(hops.map((h) => [h.url.replace(/ticket=[^&]+/, 'ticket=…'), h.status]),
      [[url, 302], [`${svc}?ticket=…`, 200]], 'the downstream redirects at once, without a form');
    assert.ok(!navs.some((n) => n.url.startsWith(up.origin)), `no trip to the upstream: ${JSON.stringify(navs)}`);
    assert.equal(await page.locator('#fm1').count(), 0, 'no login form');

    const landed = new URL(page.url());
    assert.equal(landed.origin + landed.pathname, svc);
    const ticket = landed.searchParams.get('ticket');
    assert.equal(ticketReceived(before, svc), ticket);
    const first = app.rp.slice(0, before).map((r) => r.query.ticket).filter(Boolean);
    assert.ok(!first.includes(ticket), 'a new ticket');
    const v = await serviceValidate(svc, ticket);
    assert.equal(v.user, 'campus:casuser', `the SSO ticket names the same principal: ${v.xml.slice(0, 600)}`);

    assertNoProblems(problems, [], 'SSO after the delegated login');
  } catch (err) {
    await shot(page, 'FAILED-delegation-sso').catch(() => {});
    throw err;
  } finally {
    await context.close();
    signedIn = null;
  }
});

test('forged callback: an error page with a heading and a "Back to sign-in" link to the login page', async () => {
  const forged = `${down.base}/delegated/${UPSTREAM.name}/callback?state=DS-1-${'x'.repeat(32)}&ticket=ST-1-x`;

  for (const [name, options, bound] of [
    ['forged-callback', { viewport: DESKTOP }, false],
    // a browser that did start a delegated login (it holds a CASDELEG cookie): a made-up state still fails
    ['forged-callback-bound', { viewport: PHONE }, true],
  ]) {
    await withPage(name, options, async ({ context, page, problems }) => {
      if (bound) {
        await page.goto(loginUrl({ service: service() }));
        await Promise.all([
          page.waitForURL((u) => u.href.startsWith(`${up.base}/login?`)),
          page.getByRole('link', { name: UPSTREAM.displayName, exact: true }).click(),
        ]);
        assert.ok(await cookie(context, down.base + '/delegated', 'CASDELEG'), 'a binding cookie');
      }
      const before = app.rp.length;
      const response = await page.goto(forged);
      assert.equal(response.status(), 400, 'a client error');
      assert.equal(page.url(), forged, 'no redirect');
      const h1 = page.getByRole('heading', { level: 1 });
      assert.equal(await h1.count(), 1, 'one <h1>');
      assert.equal(await h1.isVisible(), true, 'the heading is visible');
      assert.match(await h1.innerText(), /\S/, 'the heading says something');
      assert.match(await h1.innerText(), /fail/i, `the heading says the sign-in failed (${await h1.innerText()})`);
      assert.equal(await page.locator('#fm1').count(), 0, 'no login form on the error page');
      assert.equal(await cookie(context, down.base, 'CASTGC'), undefined, 'no SSO session');
      assert.equal(app.rp.length, before, 'nothing reached the service');
      await assertNoHorizontalScroll(page, `error page (${name})`);
      await shot(page, `delegation-${name}`);

      const back = page.getByRole('link', { name: 'Back to sign-in', exact: true });
      assert.equal(await back.count(), 1, 'a "Back to sign-in" link');
      assert.equal(await back.isVisible(), true, 'the link is visible');
      const [loginResponse] = await Promise.all([
        page.waitForResponse((r) => r.request().isNavigationRequest()),
        back.click(),
      ]);
      await page.waitForLoadState('load');
      const at = new URL(page.url());
      assert.equal(at.origin + at.pathname, `${down.base}/login`, `the link leads to the login page (at ${page.url()})`);
      assert.equal(loginResponse.status(), 200);
      assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Sign in');
      assert.equal(await page.locator('#fm1').isVisible(), true, 'the login form');
      assert.equal(await page.getByRole('link', { name: UPSTREAM.displayName, exact: true }).isVisible(), true,
        `with the "${UPSTREAM.displayName}" link`);

      assertNoProblems(problems, [forged], `forged callback (${name})`);
    });
  }
});
