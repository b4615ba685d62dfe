// Castellan's OpenID Connect provider in a real browser (Debian's Chromium):
// Apache + mod_auth_openidc as a relying party, cross-protocol SSO (CAS login,
// then OIDC), response_mode=form_post with and without JavaScript, the error
// page of a bad authorization request, and login_hint.
// Run through tests/browser/run.sh.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, test } from 'node:test';
import {
  APACHE_OIDC, USERS, apacheOidcService, freePort, launchBrowser, noHorizontalScroll, realProblems,
  shot, startApacheOidc, startApp, startCastellan, watchProblems,
} from '../lib/harness.mjs';

let cas;
let app;
let apache;
let browser;
let issuer;
let discovery;

const APACHE_NAME = 'Apache intranet';
// A confidential client whose redirect_uri is the Node app's recorder; its
// ID tokens are ES256 (per-client id_token_signing_alg), not the default RS256.
const RP = {
  name: 'Relying party web',
  clientId: 'rp-web',
  clientSecret: 'rp-web-secret-0123456789',
  idTokenAlg: 'ES256',
};

before(async () => {
  const ports = new Set();
  while (ports.size < 3) ports.add(await freePort());
  const [port, appPort, apachePort] = [...ports];
  const casBase = `http://127.0.0.1:${port}/cas`;
  app = await startApp({ port: appPort, casBase });
  RP.redirectUri = app.url('/rp/callback');
  const services = `${apacheOidcService(apachePort, { name: APACHE_NAME })}
[[services]]
name = ${JSON.stringify(RP.name)}
protocol = "oidc"
client_id = ${JSON.stringify(RP.clientId)}
client_secret = ${JSON.stringify(RP.clientSecret)}
redirect_uris = [${JSON.stringify(RP.redirectUri)}]
scopes = ["openid", "profile", "email"]
release = ["mail", "cn"]
id_token_signing_alg = ${JSON.stringify(RP.idTokenAlg)}
`;
  cas = await startCastellan({ port, appPort, services, logName: 'castellan-oidc.log' });
  issuer = `${cas.base}/oidc`;
  const r = await fetch(`${issuer}/.well-known/openid-configuration`);
  assert.equal(r.status, 200, 'discovery document');
  discovery = await r.json();
  assert.equal(discovery.issuer, issuer, 'issuer in the discovery document');
  apache = await startApacheOidc({ port: apachePort, casBase });
  browser = await launchBrowser();
});

after(async () => {
  // each step on its own: a failure in one must not leave the others running
  await browser?.close().catch((e) => console.error('closing chromium:', e));
  await apache?.stop().catch((e) => console.error('stopping apache:', e));
  const exit = await cas?.stop().catch((e) => console.error('stopping castellan:', e));
  await app?.stop().catch((e) => console.error('stopping the app:', e));
  if (exit && exit.signal === null && exit.code !== 0) {
    console.error(`castellan exited with code ${exit.code} on SIGTERM (see ${cas.logPath})`);
  }
});

// ------------------------------------------------------------------ helpers

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 375, height: 812 };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const b64url = (buf) => Buffer.from(buf).toString('base64url');
const random = () => b64url(crypto.randomBytes(16));

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

/**
 * An authorization request of the RP client (code flow, PKCE S256, state,
 * nonce); `params` adds or overrides parameters (null removes one).
 */
function authorizeRequest(params = {}) {
  const verifier = b64url(crypto.randomBytes(32));
  const challenge = b64url(crypto.createHash('sha256').update(verifier).digest());
  const p = {
    client_id: RP.clientId,
    redirect_uri: RP.redirectUri,
    response_type: 'code',
    scope: 'openid profile email',
    state: random(),
    nonce: random(),
    code_challenge: challenge,
    code_challenge_method: 'S256',
    ...params,
  };
  const u = new URL(discovery.authorization_endpoint);
  for (const [k, v] of Object.entries(p)) if (v !== null) u.searchParams.set(k, v);
  return { url: u.href, state: p.state, nonce: p.nonce, verifier };
}

/** Main-frame navigation requests of `page` from now on (redirect hops included). */
function recordNavigations(page) {
  const requests = [];
  page.on('request', (r) => {
    if (r.isNavigationRequest() && r.frame() === page.mainFrame()) requests.push(r);
  });
  return requests;
}

/** {method, url, status} of each request (status null: no response). */
async function hops(requests) {
  return Promise.all(requests.map(async (r) => ({
    method: r.method(), url: r.url(), status: (await r.response().catch(() => null))?.status() ?? null,
  })));
}

/** The hops that led to `response`, first to last. */
async function redirectChain(response) {
  const chain = [];
  for (let r = response.request(); r; r = r.redirectedFrom()) chain.unshift(r);
  return hops(chain);
}

const show = (x) => JSON.stringify(x, null, 1);

async function fillLogin(page, { username, password }) {
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password', { exact: true }).fill(password);
}

async function focusedId(page) {
  return page.evaluate(() => document.activeElement?.id || document.activeElement?.tagName);
}

async function assertNoHorizontalScroll(page, where) {
  const m = await noHorizontalScroll(page);
  assert.ok(m.scrollWidth <= m.innerWidth,
    `${where}: horizontal scroll (scrollWidth ${m.scrollWidth} > innerWidth ${m.innerWidth})`);
}

function assertNoProblems(problems, documentUrls, where) {
  const real = realProblems(problems, documentUrls);
  assert.deepEqual(real, [], `${where}: console errors / page errors / CSP violations`);
}

async function castgc(context) {
  return (await context.cookies(cas.base + '/')).find((c) => c.name === 'CASTGC');
}

/** KEY=value lines of the CGI page (text/plain, shown by Chromium in a <pre>). */
function parseEnv(text) {
  const env = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) env[line.slice(0, i)] = line.slice(i + 1);
  }
  return env;
}

/** Asserts that the login page names `name` and the redirect host. */
async function assertNamesApplication(page, name, host, where) {
  const main = await page.locator('main').innerText();
  assert.ok(main.includes(name), `${where}: the login page names the application "${name}":\n${main}`);
  assert.ok(main.includes(host), `${where}: the login page names the host ${host} of its redirect_uri:\n${main}`);
  assert.doesNotMatch(main, /oidc\/callback|ticket/i, `${where}: the internal callback is not shown as the application`);
}

/** The code flow's back channel: the RP redeems the code at the token endpoint. */
async function redeem(code, verifier) {
  const r = await fetch(discovery.token_endpoint, {
    method: 'POST',
    headers: {
      Authorization: `Basic ${Buffer.from(`${encodeURIComponent(RP.clientId)}:${encodeURIComponent(RP.clientSecret)}`).toString('base64')}`,
      'Content-Type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: RP.redirectUri, code_verifier: verifier }),
  });
  const text = await r.text();
  assert.equal(r.status, 200, `token endpoint: ${r.status} ${text}`);
  return JSON.parse(text);
}

let jwks;
/** Verifies the JWS signature with Castellan's JWKS; returns {header, claims}. */
async function verifyJwt(jwt) {
  const [h, p, s] = jwt.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url'));
  const claims = JSON.parse(Buffer.from(p, 'base64url'));
  jwks ??= await (await fetch(discovery.jwks_uri)).json();
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  assert.ok(jwk, `JWKS has the key ${header.kid} (kids: ${jwks.keys.map((k) => k.kid)})`);
  const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  const data = Buffer.from(`${h}.${p}`);
  const sig = Buffer.from(s, 'base64url');
  let ok;
  if (header.alg === 'RS256') ok = crypto.verify('sha256', data, key, sig);
  else if (header.alg === 'ES256') ok = crypto.verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, sig);
  else assert.fail(`unexpected alg ${header.alg}`);
  assert.ok(ok, `signature of the ${header.alg} JWT verifies with key ${header.kid}`);
  return { header, claims };
}

/** Redeems `code` and checks the RP's ID token; returns its claims. */
async function redeemAndCheck(code, { verifier, nonce }) {
  const tokens = await redeem(code, verifier);
  assert.equal(tokens.token_type, 'Bearer');
  assert.ok(tokens.access_token && tokens.id_token, `access and ID token: ${show(tokens)}`);
  const { header, claims } = await verifyJwt(tokens.id_token);
  assert.equal(header.alg, RP.idTokenAlg, 'the ID token is signed with the client\'s id_token_signing_alg');
  assert.equal(claims.iss, issuer);
  assert.equal(claims.aud, RP.clientId);
  assert.equal(claims.sub, 'casuser');
  assert.equal(claims.nonce, nonce);
  assert.equal(claims.preferred_username, 'casuser');
  assert.equal(claims.email, 'casuser@example.org');
  assert.equal(claims.name, 'CAS User');
  const half = crypto.createHash('sha256').update(tokens.access_token).digest().subarray(0, 16);
  assert.equal(claims.at_hash, b64url(half), 'at_hash of the access token');
  return claims;
}

// ------------------------------------------------------------------ tests

test('mod_auth_openidc: Apache page → Castellan login by keyboard → REMOTE_USER and claims; logout through /oidc/logout ends the SSO session', async () => {
  await withPage('oidc-apache', { viewport: DESKTOP }, async ({ context, page, problems }) => {
    const protectedUrl = `${apache.base}/secured/env.cgi`;
    const nav = recordNavigations(page);
    await page.goto(protectedUrl);
    assert.ok(page.url().startsWith(`${cas.base}/login?`),
      `Apache sent the browser to Castellan's login page (at ${page.url()}):\n${show(await hops(nav))}\n${apache.logTail(30)}`);
    const toLogin = await hops(nav);
    const authz = toLogin.find((h) => h.url.startsWith(`${discovery.authorization_endpoint}?`));
    assert.ok(authz, `through Castellan's authorization endpoint: ${show(toLogin)}`);
    assert.equal(authz.status, 302, 'the authorization endpoint redirects to the login page');
    const aq = new URL(authz.url).searchParams;
    assert.equal(aq.get('client_id'), APACHE_OIDC.clientId);
    assert.equal(aq.get('redirect_uri'), apache.redirectUri);
    assert.equal(aq.get('code_challenge_method'), 'S256');
    assert.ok(aq.get('state') && aq.get('nonce') && aq.get('code_challenge'), `state, nonce, PKCE: ${authz.url}`);

    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Sign in');
    await assertNamesApplication(page, APACHE_NAME, '127.0.0.1', 'Apache login page');
    await shot(page, 'oidc-apache-login-1280');

    // keyboard only: the username field has the focus, Tab, Enter
    assert.equal(await focusedId(page), 'username', 'the username field has the focus on load');
    const mark = nav.length;
    await page.keyboard.type(USERS.casuser.username);
    await page.keyboard.press('Tab');
    assert.equal(await focusedId(page), 'password', 'Tab goes to the password field');
    await page.keyboard.type(USERS.casuser.password);
    await Promise.all([
      page.waitForURL(protectedUrl, { timeout: 30_000 }),
      page.keyboard.press('Enter'),
    ]).catch(async (e) => {
      throw new Error(`${e.message}\nat ${page.url()}\n${show(await hops(nav.slice(mark)))}\n${apache.logTail(40)}`);
    });

    const back = await hops(nav.slice(mark));
    const atRp = back.find((h) => h.url.startsWith(`${apache.redirectUri}?`));
    assert.ok(atRp, `back at mod_auth_openidc's redirect_uri: ${show(back)}`);
    const rq = new URL(atRp.url).searchParams;
    assert.ok(rq.get('code'), `a code: ${atRp.url}`);
    assert.equal(rq.get('state'), aq.get('state'), 'the state of the authorization request');
    assert.equal(rq.get('iss'), issuer, 'iss (RFC 9207)');
    assert.equal(rq.get('error'), null);

    const text = await page.locator('body').innerText();
    const env = parseEnv(text);
    const why = `${text}\n${apache.logTail(40)}`;
    assert.equal(env.REMOTE_USER, 'casuser', why);
    assert.equal(env.OIDC_CLAIM_preferred_username, 'casuser', why);
    assert.equal(env.OIDC_CLAIM_sub, 'casuser', why);
    assert.equal(env.OIDC_CLAIM_email, 'casuser@example.org', why);
    assert.equal(env.OIDC_CLAIM_name, 'CAS User', why);
    assert.equal(env.OIDC_CLAIM_iss, issuer, why);
    assert.equal(env.OIDC_CLAIM_aud, APACHE_OIDC.clientId, why);
    assert.equal(env.OIDC_CLAIM_nonce, aq.get('nonce'), why);
    await shot(page, 'oidc-apache-claims');
    assert.ok(await castgc(context), 'an SSO session at Castellan (CASTGC)');

    // mod_auth_openidc's logout: through Castellan's end_session_endpoint to loggedout.html
    const logoutUrl = `${apache.redirectUri}?logout=${encodeURIComponent(apache.loggedOutUrl)}`;
    const mark2 = nav.length;
    await page.goto(logoutUrl);
    const out = await hops(nav.slice(mark2));
    const endSession = out.find((h) => h.url.startsWith(`${discovery.end_session_endpoint}?`));
    assert.equal(discovery.end_session_endpoint, `${issuer}/logout`);
    assert.ok(endSession, `through Castellan's /cas/oidc/logout: ${show(out)}\n${apache.logTail(30)}`);
    assert.ok([302, 303].includes(endSession.status), `Castellan's logout redirects: ${show(out)}`);
    const eq = new URL(endSession.url).searchParams;
    assert.equal(eq.get('post_logout_redirect_uri'), apache.loggedOutUrl);
    const hint = eq.get('id_token_hint');
    assert.ok(hint, 'mod_auth_openidc sends id_token_hint');
    assert.equal((await verifyJwt(hint)).claims.aud, APACHE_OIDC.clientId, 'the hint is Apache\'s ID token');
    const landed = new URL(page.url());
    assert.equal(landed.origin + landed.pathname, apache.loggedOutUrl, `ends at loggedout.html: ${show(out)}`);
    if (eq.get('state')) assert.equal(landed.searchParams.get('state'), eq.get('state'), 'state returned');
    assert.equal(await page.locator('#loggedout').innerText(), 'logged out of apache');
    assert.equal(await castgc(context), undefined, 'CASTGC is cleared');
    await shot(page, 'oidc-apache-loggedout');

    // the SSO session is gone: the protected page needs the login form again
    await page.goto(protectedUrl);
    assert.ok(page.url().startsWith(`${cas.base}/login?`), `back on Castellan's login page (at ${page.url()})`);
    assert.equal(await page.locator('#fm1').isVisible(), true, 'the login form is shown, no SSO');
    await assertNamesApplication(page, APACHE_NAME, '127.0.0.1', 'login page after the logout');

    assertNoProblems(problems, [], 'mod_auth_openidc');
  });
});

test('cross-protocol SSO: a CAS login, then an OIDC authorization goes to the redirect_uri with a code and no login form', async () => {
  await withPage('oidc-cross-sso', { viewport: DESKTOP }, async ({ context, page, problems }) => {
    const service = app.url('/app/');
    await page.goto(loginUrl({ service }));
    assert.equal(await page.locator('#fm1').isVisible(), true, 'the CAS login form');
    await fillLogin(page, USERS.casuser);
    await Promise.all([
      page.waitForURL((u) => u.href.startsWith(`${service}?ticket=`)),
      page.getByRole('button', { name: 'Sign in' }).click(),
    ]);
    assert.equal(await page.locator('#user').innerText(), 'casuser', 'signed in at the CAS service');
    assert.ok(await castgc(context), 'CASTGC');
    const loginSecond = Math.floor(Date.now() / 1000);
    await sleep(1_100); // so that auth_time can tell the CAS login from this authorization

    const a = authorizeRequest();
    const rpBefore = app.rp.length;
    const response = await page.goto(a.url);
    const chain = await redirectChain(response);
    const landed = new URL(page.url());
    assert.equal(landed.origin + landed.pathname, RP.redirectUri, `at the redirect_uri: ${show(chain)}`);
    for (const h of chain.slice(0, -1)) {
      assert.ok(h.url.startsWith(cas.base), `every hop before the client is Castellan's: ${show(chain)}`);
      assert.ok([302, 303].includes(h.status), `no page shown on the way (${h.status} at ${h.url}): ${show(chain)}`);
    }
    assert.ok(chain[0].url === a.url && chain.some((h) => h.url.startsWith(`${cas.base}/login?`)),
      `authorize → CAS login (SSO) → client: ${show(chain)}`);
    const viaLogin = new URL(chain.find((h) => h.url.startsWith(`${cas.base}/login?`)).url);
    assert.equal(viaLogin.searchParams.get('renew'), null);
    assert.equal(viaLogin.searchParams.get('gateway'), null);
    assert.equal(chain.at(-1).status, 200);

    const code = landed.searchParams.get('code');
    assert.ok(code, `a code: ${page.url()}`);
    assert.equal(landed.searchParams.get('state'), a.state);
    assert.equal(landed.searchParams.get('iss'), issuer);
    assert.equal(await page.locator('#p-code').innerText(), code, 'the client got the code');
    assert.equal(app.rp.length, rpBefore + 1, `one request at the client: ${show(app.rp.slice(rpBefore))}`);
    assert.deepEqual({ ...app.rp.at(-1), query: undefined },
      { method: 'GET', path: '/rp/callback', query: undefined, body: null, contentType: null });
    await shot(page, 'oidc-cross-sso-at-client');

    const claims = await redeemAndCheck(code, a);
    assert.ok(claims.auth_time <= loginSecond,
      `auth_time ${claims.auth_time} is the time of the CAS login (${loginSecond}), not of this authorization`);

    assertNoProblems(problems, [], 'cross-protocol SSO');
  });
});

test('response_mode=form_post: auto-submitted POST with JavaScript; a visible Continue button without', async () => {
  await withPage('oidc-form-post-js', { viewport: DESKTOP }, async ({ page, problems }) => {
    const a = authorizeRequest({ response_mode: 'form_post' });
    await page.goto(a.url);
    assert.ok(page.url().startsWith(`${cas.base}/login?`), `the login page (at ${page.url()})`);
    await assertNamesApplication(page, RP.name, '127.0.0.1', 'form_post login page');
    const nav = recordNavigations(page);
    const rpBefore = app.rp.length;
    await fillLogin(page, USERS.casuser);
    await Promise.all([
      page.waitForURL(RP.redirectUri),
      page.getByRole('button', { name: 'Sign in' }).click(),
    ]);
    const trail = await hops(nav);
    assert.equal(await page.locator('#rp-method').innerText(), 'POST', `the client got a POST: ${show(trail)}`);
    assert.equal(app.rp.length, rpBefore + 1, `one request at the client: ${show(app.rp.slice(rpBefore))}`);
    const got = app.rp.at(-1);
    assert.equal(got.method, 'POST');
    assert.equal(got.path, '/rp/callback');
    assert.deepEqual(got.query, {}, 'nothing in the query string');
    assert.match(got.contentType || '', /^application\/x-www-form-urlencoded/);
    assert.ok(got.body?.code, `code in the body: ${show(got)}`);
    assert.equal(got.body.state, a.state, 'state in the body');
    for (const h of trail) assert.ok(!/[?&]code=/.test(h.url), `no code in a URL: ${show(trail)}`);
    const last = trail.at(-1);
    assert.deepEqual([last.method, last.url, last.status], ['POST', RP.redirectUri, 200], show(trail));
    const formPage = trail.at(-2);
    assert.ok(formPage.url.startsWith(cas.base) && formPage.status === 200,
      `the POST came from a Castellan page: ${show(trail)}`);
    await redeemAndCheck(got.body.code, a);
    assertNoProblems(problems, [], 'form_post with JavaScript');
  });

  await withPage('oidc-form-post-nojs', { viewport: DESKTOP, javaScriptEnabled: false }, async ({ page, problems }) => {
    const a = authorizeRequest({ response_mode: 'form_post' });
    await page.goto(a.url);
    assert.ok(page.url().startsWith(`${cas.base}/login?`), `the login page (at ${page.url()})`);
    const rpBefore = app.rp.length;
    await fillLogin(page, USERS.casuser);
    await Promise.all([
      page.waitForURL((u) => u.href.startsWith(`${cas.base}/oidc/`)),
      page.getByRole('button', { name: 'Sign in' }).click(),
    ]);
    await page.waitForLoadState('load');
    assert.ok(page.url().startsWith(cas.base), `still on Castellan without JavaScript (at ${page.url()})`);
    assert.equal(app.rp.length, rpBefore, 'nothing posted to the client yet');
    const form = page.locator('form[method=post]');
    assert.equal(await form.count(), 1, 'one form');
    assert.equal(await form.getAttribute('action'), RP.redirectUri, 'the form posts to the redirect_uri');
    const code = await form.locator('input[type=hidden][name=code]').inputValue();
    assert.ok(code, 'a hidden code');
    assert.equal(await form.locator('input[type=hidden][name=state]').inputValue(), a.state);
    const button = page.getByRole('button', { name: 'Continue' });
    assert.equal(await button.isVisible(), true, 'a visible Continue button');
    await assertNoHorizontalScroll(page, 'form_post page');
    await shot(page, 'oidc-form-post-continue-nojs-1280');

    await Promise.all([page.waitForURL(RP.redirectUri), button.click()]);
    assert.equal(await page.locator('#rp-method').innerText(), 'POST');
    assert.equal(app.rp.length, rpBefore + 1);
    const got = app.rp.at(-1);
    assert.equal(got.method, 'POST');
    assert.deepEqual(got.query, {});
    assert.equal(got.body?.code, code, 'the code of the page');
    assert.equal(got.body.state, a.state);
    await redeemAndCheck(code, a);
    assertNoProblems(problems, [], 'form_post without JavaScript');
  });
});

test('bad authorization requests: a 400 error page on Castellan, no redirect, no CSP violation', async () => {
  await withPage('oidc-error', { viewport: DESKTOP }, async ({ context, page, problems }) => {
    const foreign = [];
    page.on('request', (r) => {
      if (!r.url().startsWith(cas.origin + '/') && !r.url().startsWith('data:')) foreign.push(`${r.method()} ${r.url()}`);
    });
    const rpBefore = app.rp.length;
    const cases = [
      // same recorder, unregistered path: a wrong redirect would be recorded
      ['unregistered redirect_uri', authorizeRequest({ redirect_uri: app.url('/rp/evil') }).url],
      ['another client\'s redirect_uri', authorizeRequest({ redirect_uri: apache.redirectUri }).url],
      ['unknown client_id', authorizeRequest({ client_id: 'no-such-client' }).url],
    ];
    const urls = [];
    const check = async (what, url) => {
      urls.push(url);
      const response = await page.goto(url);
      await page.waitForLoadState('networkidle');
      assert.equal(response.status(), 400, `${what}: status`);
      assert.match(response.headers()['content-type'] || '', /^text\/html/, `${what}: an HTML page`);
      assert.equal(response.request().redirectedFrom(), null, `${what}: no redirect`);
      assert.equal(page.url(), url, `${what}: the browser stays on Castellan's URL`);
      const h1 = page.getByRole('heading', { level: 1 });
      assert.equal(await h1.count(), 1, `${what}: one h1`);
      assert.equal(await h1.isVisible(), true, `${what}: visible h1`);
      const heading = (await h1.innerText()).trim();
      assert.ok(heading && heading !== 'Sign in', `${what}: an error heading (got ${JSON.stringify(heading)})`);
      assert.equal(await page.locator('#fm1').count(), 0, `${what}: no login form`);
      assert.deepEqual(foreign, [], `${what}: nothing loaded from outside Castellan`);
      assert.equal(app.rp.length, rpBefore, `${what}: nothing reached the client`);
      return heading;
    };

    for (const [what, url] of cases) await check(what, url);
    await shot(page, 'oidc-error-1280');
    await page.setViewportSize(PHONE);
    await assertNoHorizontalScroll(page, 'error page at 375px');
    await shot(page, 'oidc-error-375');
    await page.setViewportSize(DESKTOP);

    // with an SSO session too
    const service = app.url('/app/');
    await page.goto(loginUrl({ service }));
    await fillLogin(page, USERS.casuser);
    await Promise.all([
      page.waitForURL((u) => u.href.startsWith(`${service}?ticket=`)),
      page.getByRole('button', { name: 'Sign in' }).click(),
    ]);
    assert.ok(await castgc(context), 'signed in');
    foreign.length = 0;
    await check('unregistered redirect_uri with an SSO session', cases[0][1]);
    await check('unknown client_id with an SSO session', cases[2][1]);

    assertNoProblems(problems, urls, 'OIDC error page');
  });
});

test('login_hint pre-fills the username (escaped); the user then only types the password', async () => {
  await withPage('oidc-login-hint', { viewport: DESKTOP }, async ({ page, problems }) => {
    await page.goto(authorizeRequest({ login_hint: 'alice' }).url);
    assert.ok(page.url().startsWith(`${cas.base}/login?`), `the login page (at ${page.url()})`);
    assert.equal(await page.getByLabel('Username').inputValue(), 'alice', 'username pre-filled from login_hint');
    assert.equal(await page.getByLabel('Password', { exact: true }).inputValue(), '', 'no password');
    assert.equal(await focusedId(page), 'password', 'the focus is on the password field');
    await assertNamesApplication(page, RP.name, '127.0.0.1', 'login_hint page');
    await shot(page, 'oidc-login-hint-1280');

    const nasty = `al"ice'><b id="injected">x</b>`;
    await page.goto(authorizeRequest({ login_hint: nasty }).url);
    assert.equal(await page.getByLabel('Username').inputValue(), nasty, 'the hint is kept verbatim');
    assert.equal(await page.locator('#injected').count(), 0, 'the hint is not markup');

    const a = authorizeRequest({ login_hint: USERS.casuser.username });
    await page.goto(a.url);
    assert.equal(await page.getByLabel('Username').inputValue(), USERS.casuser.username);
    assert.equal(await focusedId(page), 'password');
    const rpBefore = app.rp.length;
    await page.keyboard.type(USERS.casuser.password);
    await Promise.all([
      page.waitForURL((u) => u.href.startsWith(`${RP.redirectUri}?`)),
      page.keyboard.press('Enter'),
    ]);
    const landed = new URL(page.url());
    assert.equal(landed.searchParams.get('state'), a.state);
    assert.ok(landed.searchParams.get('code'), `a code: ${page.url()}`);
    assert.equal(app.rp.length, rpBefore + 1);
    await redeemAndCheck(landed.searchParams.get('code'), a);

    assertNoProblems(problems, [], 'login_hint');
  });
});
