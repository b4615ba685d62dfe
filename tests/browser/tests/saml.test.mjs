// Castellan's SAML 2.0 IdP in a real browser (Debian's Chromium): the
// Shibboleth SP (our own Apache + mod_shib + shibd, lib/harness.mjs
// prepareShibbolethSp) as the service provider. SP-initiated SSO with the
// auto-submitted SAMLResponse form (JavaScript) and its Continue button (no
// JavaScript), the error page of an AuthnRequest Castellan must not answer,
// and single logout started at Shibboleth.
// Run through tests/browser/run.sh.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import zlib from 'node:zlib';
import { after, before, test } from 'node:test';
import {
  USERS, freePort, launchBrowser, noHorizontalScroll, prepareShibbolethSp, realProblems, shot,
  startApp, startCastellan, watchProblems,
} from '../lib/harness.mjs';

let cas;
let app;
let sp;
let browser;
let idpEntityId;
// REMOTE_USER (the persistent NameID) of casuser at the SP, from the first login
let persistentUser = null;

// a name with a space: the login page shows it, the IdP's callback URL carries it
const SP_NAME = 'Shibboleth intranet';
const AC_PPT = 'urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport';
const STATUS_SUCCESS = 'urn:oasis:names:tc:SAML:2.0:status:Success';

before(async () => {
  const ports = new Set();
  while (ports.size < 3) ports.add(await freePort());
  const [port, appPort, spPort] = [...ports];
  const casBase = `http://127.0.0.1:${port}/cas`;
  app = await startApp({ port: appPort, casBase });
  sp = prepareShibbolethSp({ port: spPort, name: SP_NAME, release: ['mail', 'cn'] });
  cas = await startCastellan({ port, appPort, services: sp.service(), logName: 'castellan-saml.log' });
  await sp.start({ casBase });
  idpEntityId = sp.idpEntityId;
  assert.equal(idpEntityId, `${casBase}/idp`, 'the IdP entityID (default {public_url}/idp)');
  browser = await launchBrowser();
});

after(async () => {
  // each step on its own: a failure in one must not leave the others running
  await browser?.close().catch((e) => console.error('closing chromium:', e));
  await sp?.stop().catch((e) => console.error('stopping shibboleth:', e));
  const exit = await cas?.stop().catch((e) => console.error('stopping castellan:', e));
  await app?.stop().catch((e) => console.error('stopping the app:', e));
  if (exit && exit.signal === null && exit.code !== 0) {
    console.error(`castellan exited with code ${exit.code} on SIGTERM (see ${cas.logPath})`);
  }
});

// ------------------------------------------------------------------ helpers

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 375, height: 812 };
const show = (x) => JSON.stringify(x, null, 1);

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

/** Every POST the page makes to Shibboleth's ACS from now on. */
function recordAcsPosts(page) {
  const posts = [];
  page.on('request', (r) => {
    if (r.method() === 'POST' && r.url() === sp.acsUrl) posts.push(r);
  });
  return posts;
}

function assertNoProblems(problems, documentUrls, where) {
  const real = realProblems(problems, documentUrls);
  assert.deepEqual(real, [], `${where}: console errors / page errors / CSP violations`);
}

async function assertNoHorizontalScroll(page, where) {
  const m = await noHorizontalScroll(page);
  assert.ok(m.scrollWidth <= m.innerWidth,
    `${where}: horizontal scroll (scrollWidth ${m.scrollWidth} > innerWidth ${m.innerWidth})`);
}

async function castgc(context) {
  return (await context.cookies(cas.base + '/')).find((c) => c.name === 'CASTGC');
}

async function focusedId(page) {
  return page.evaluate(() => document.activeElement?.id || document.activeElement?.tagName);
}

/** KEY=value lines of the CGI page (text/plain, shown by Chromium in a <pre>). */
function parseEnv(text) {
  const env = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0 && !(line.slice(0, i) in env)) env[line.slice(0, i)] = line.slice(i + 1);
  }
  return env;
}

/** The SAML message of an HTTP-Redirect binding URL (raw DEFLATE, base64): {xml, params}. */
function redirectMessage(url) {
  const params = Object.fromEntries(new URL(url).searchParams);
  const raw = params.SAMLRequest ?? params.SAMLResponse;
  if (!raw) return null;
  return { xml: zlib.inflateRawSync(Buffer.from(raw, 'base64')).toString('utf8'), params };
}

/** The start tag of the first element named `local` (any prefix) in `xml`, or null. */
function startTag(xml, local) {
  return new RegExp(`<(?:[\\w.-]+:)?${local}\\b[^>]*>`).exec(xml)?.[0] ?? null;
}

function attr(tag, name) {
  const m = tag && new RegExp(`\\s${name}="([^"]*)"`).exec(tag);
  return m ? m[1].replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&') : null;
}

function text(xml, local) {
  const m = new RegExp(`<(?:[\\w.-]+:)?${local}\\b[^>]*>([^<]*)</(?:[\\w.-]+:)?${local}>`).exec(xml);
  return m ? m[1].trim() : null;
}

/** The first StatusCode's Value of a SAML response. */
const statusCode = (xml) => attr(startTag(xml, 'StatusCode'), 'Value');

/** The AuthnRequest Shibboleth sent to Castellan's Redirect SSO endpoint, from the navigation hops. */
function authnRequestOf(trail) {
  const hop = trail.find((h) => h.url.startsWith(`${cas.base}/idp/profile/SAML2/Redirect/SSO?`));
  assert.ok(hop, `Shibboleth sent an AuthnRequest to Castellan's Redirect SSO endpoint: ${show(trail)}\n${sp.logTail(0.5)}`);
  const msg = redirectMessage(hop.url);
  assert.ok(msg && startTag(msg.xml, 'AuthnRequest'), `an AuthnRequest in ${hop.url}`);
  const tag = startTag(msg.xml, 'AuthnRequest');
  assert.equal(text(msg.xml, 'Issuer'), sp.entityId, 'the AuthnRequest is Shibboleth\'s');
  assert.equal(attr(tag, 'AssertionConsumerServiceURL'), sp.acsUrl, `the ACS of the AuthnRequest: ${tag}`);
  assert.ok(attr(tag, 'ID'), 'an AuthnRequest ID');
  assert.equal(hop.status, 302, `Castellan's SSO endpoint redirects to the login page: ${show(trail)}`);
  return { hop, id: attr(tag, 'ID'), relayState: msg.params.RelayState ?? null, xml: msg.xml };
}

/**
 * Checks the form POST to Shibboleth's ACS: the SAMLResponse for `authn`; no
 * Referer (the page's URL, the IdP callback, holds a ticket; Castellan's
 * Referrer-Policy is no-referrer, which also makes Chromium send Origin: null).
 */
async function checkAcsPost(post, authn, where) {
  const headers = await post.allHeaders();
  assert.equal(headers.referer, undefined, `${where}: no Referer leaks the callback URL to the SP`);
  const body = new URLSearchParams(post.postData() || '');
  const b64 = body.get('SAMLResponse');
  assert.ok(b64, `${where}: a SAMLResponse in the POST to the ACS: ${post.postData()?.slice(0, 300)}`);
  assert.equal(body.get('RelayState'), authn.relayState, `${where}: the RelayState of the AuthnRequest comes back`);
  const xml = Buffer.from(b64.replace(/\s+/g, ''), 'base64').toString('utf8');
  const resp = startTag(xml, 'Response');
  assert.ok(resp, `${where}: a samlp:Response: ${xml.slice(0, 500)}`);
  assert.equal(attr(resp, 'Destination'), sp.acsUrl, `${where}: Destination`);
  assert.equal(attr(resp, 'InResponseTo'), authn.id, `${where}: InResponseTo is the AuthnRequest's ID`);
  assert.equal(statusCode(xml), STATUS_SUCCESS, `${where}: status`);
  assert.ok(startTag(xml, 'Assertion') && startTag(xml, 'Signature'), `${where}: a signed assertion`);
  return xml;
}

/** The CGI page at the SP: REMOTE_USER (persistent NameID) and the released attributes. */
async function checkEnvPage(page, where) {
  const body = await page.locator('body').innerText();
  const env = parseEnv(body);
  const why = `${where}:\n${body}\n${sp.logTail(0.5)}`;
  assert.equal(env.AUTH_TYPE, 'shibboleth', why);
  const user = env.REMOTE_USER || '';
  const [idp, spq, value] = user.split('!');
  assert.ok(idp === idpEntityId && spq === sp.entityId && value && user.split('!').length === 3,
    `REMOTE_USER ${JSON.stringify(user)} is Shibboleth's persistent-id IdP!SP!value\n${why}`);
  assert.ok(!['casuser', 'casuser@example.org'].includes(value), `the persistent NameID is opaque: ${user}`);
  assert.equal(env.persistent_id, user, why);
  assert.equal(env.mail, 'casuser@example.org', why);
  assert.equal(env.cn, 'CAS User', why);
  assert.equal(env.Shib_Identity_Provider, idpEntityId, why);
  assert.equal(env.Shib_AuthnContext_Class, AC_PPT, why);
  assert.ok(env.Shib_Session_Index, `a SessionIndex: ${why}`);
  return user;
}

/** The login page names the SP: its service name and the host of its ACS. */
async function assertNamesSp(page, where) {
  assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Sign in', `${where}: heading`);
  const name = page.locator('main .service-name');
  assert.equal(await name.count(), 1, `${where}: the login page names the application:\n${await page.locator('main').innerText()}`);
  const host = new URL(sp.acsUrl).hostname;
  assert.equal(await name.innerText(), `${SP_NAME} (${host})`, `${where}: the service name and the ACS host`);
  const main = await page.locator('main').innerText();
  assert.doesNotMatch(main, /idp\/callback|SAMLRequest|ticket/i, `${where}: the internal callback is not shown`);
}

async function loginByKeyboard(page, user = USERS.casuser) {
  await page.waitForFunction(() => document.activeElement?.id === 'username', null, { timeout: 5_000 })
    .catch(async () => assert.fail(`focus is not in the username field on load but on ${await focusedId(page)}`));
  await page.keyboard.type(user.username);
  await page.keyboard.press('Tab');
  assert.equal(await focusedId(page), 'password', 'Tab goes to the password field');
  await page.keyboard.type(user.password);
}

/**
 * The hops of a login from the POST of the login form on: Castellan only up to
 * its callback page (200), whose form the browser posts to the ACS (Shibboleth
 * accepts it: 302), then the protected page.
 */
function checkLoginTrail(trail, where) {
  const acsAt = trail.findIndex((h) => h.method === 'POST' && h.url === sp.acsUrl);
  assert.ok(acsAt > 0, `${where}: the browser posted to Shibboleth's ACS: ${show(trail)}`);
  const formPage = trail[acsAt - 1];
  assert.ok(formPage.url.startsWith(`${cas.base}/idp/callback?`) && formPage.status === 200,
    `${where}: the POST came from Castellan's callback page: ${show(trail)}`);
  assert.ok(trail.slice(0, acsAt).every((h) => h.url.startsWith(cas.base)), `${where}: Castellan until the POST: ${show(trail)}`);
  assert.equal(trail[acsAt].status, 302, `${where}: Shibboleth accepted the Response (302 to the resource): ${show(trail)}`);
  assert.deepEqual(trail.slice(acsAt + 1).map((h) => [h.method, h.url, h.status]), [['GET', sp.protectedUrl, 200]],
    `${where}: then the protected page: ${show(trail)}`);
}

/** The protected page → Castellan's login form, signed in with JavaScript; returns the AuthnRequest. */
async function loginThroughShibboleth(page, where) {
  const nav = recordNavigations(page);
  const posts = recordAcsPosts(page);
  await page.goto(sp.protectedUrl);
  assert.ok(page.url().startsWith(`${cas.base}/login?`),
    `${where}: Shibboleth sent the browser to Castellan's login page (at ${page.url()}):\n${show(await hops(nav))}\n${sp.logTail(0.5)}`);
  const authn = authnRequestOf(await hops(nav));
  await assertNamesSp(page, where);
  const mark = nav.length;
  await loginByKeyboard(page);
  await Promise.all([
    page.waitForURL(sp.protectedUrl, { timeout: 30_000 }),
    page.keyboard.press('Enter'),
  ]).catch(async (e) => {
    throw new Error(`${where}: ${e.message}\nat ${page.url()}\n${show(await hops(nav.slice(mark)))}\n${sp.logTail(0.5)}`);
  });
  const trail = await hops(nav.slice(mark));
  checkLoginTrail(trail, where);
  assert.equal(posts.length, 1, `${where}: one POST to the ACS`);
  await checkAcsPost(posts[0], authn, where);
  return { authn, trail, user: await checkEnvPage(page, where) };
}

/** A minimal AuthnRequest for the HTTP-Redirect binding: its URL at Castellan's SSO endpoint. */
function redirectAuthnRequest({ issuer, acsUrl, relayState = 'rs-' + crypto.randomBytes(6).toString('hex') }) {
  const destination = `${cas.base}/idp/profile/SAML2/Redirect/SSO`;
  const xml = `<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" `
    + `xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_${crypto.randomBytes(16).toString('hex')}" `
    + `Version="2.0" IssueInstant="${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}" `
    + `Destination="${destination}" AssertionConsumerServiceURL="${acsUrl}" `
    + `ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST">`
    + `<saml:Issuer>${issuer}</saml:Issuer></samlp:AuthnRequest>`;
  const u = new URL(destination);
  u.searchParams.set('SAMLRequest', zlib.deflateRawSync(Buffer.from(xml)).toString('base64'));
  u.searchParams.set('RelayState', relayState);
  return u.href;
}

// ------------------------------------------------------------------ tests

test('SSO from Shibboleth: login page names the SP, keyboard login, the SAMLResponse form posts itself to the ACS, REMOTE_USER and attributes', async () => {
  await withPage('saml-sso-js', { viewport: DESKTOP }, async ({ context, page, problems }) => {
    const nav = recordNavigations(page);
    const posts = recordAcsPosts(page);
    const mark0 = sp.logMark();
    await page.goto(sp.protectedUrl);
    const toLogin = await hops(nav);
    assert.ok(page.url().startsWith(`${cas.base}/login?`),
      `Shibboleth sent the browser to Castellan's login page (at ${page.url()}):\n${show(toLogin)}\n${sp.logTail(0.5)}`);
    const authn = authnRequestOf(toLogin);
    const service = new URL(page.url()).searchParams.get('service') || '';
    assert.ok(service.startsWith(`${cas.base}/idp/callback?`), `the login is for the IdP's callback: ${service}`);
    assert.equal(new URL(page.url()).searchParams.get('renew'), null, 'no ForceAuthn');
    assert.equal(await page.locator('#fm1').isVisible(), true, 'the login form');
    await assertNamesSp(page, 'SAML login page');
    await shot(page, 'saml-login-1280');

    const mark = nav.length;
    await loginByKeyboard(page);
    await Promise.all([
      page.waitForURL(sp.protectedUrl, { timeout: 30_000 }),
      page.keyboard.press('Enter'),
    ]).catch(async (e) => {
      throw new Error(`${e.message}\nat ${page.url()}\n${show(await hops(nav.slice(mark)))}\n${sp.logTail(0.5)}`);
    });
    const trail = await hops(nav.slice(mark));
    // POST /cas/login → 302 callback → 200 the form page → POST ACS (by the page's script) → 302 → the page
    assert.deepEqual(trail.slice(0, 2).map((h) => [h.method, h.url.split('?')[0], h.status]),
      [['POST', `${cas.base}/login`, 302], ['GET', `${cas.base}/idp/callback`, 200]],
      `the login form's POST, then Castellan's callback page: ${show(trail)}`);
    try {
      checkLoginTrail(trail, 'SSO with JavaScript');
    } catch (e) {
      e.message += `\n--- shibd.log ---\n${sp.logSince(mark0)}`;
      throw e;
    }
    assert.equal(posts.length, 1, 'exactly one POST to the ACS');
    await checkAcsPost(posts[0], authn, 'SSO with JavaScript');

    persistentUser = await checkEnvPage(page, 'protected page after SSO');
    await shot(page, 'saml-shibboleth-env');
    assert.ok(await castgc(context), 'an SSO session at Castellan (CASTGC)');

    // the SP session holds: the page again without Castellan
    const before = nav.length;
    await page.reload();
    assert.equal(page.url(), sp.protectedUrl);
    assert.deepEqual((await hops(nav.slice(before))).map((h) => h.url), [sp.protectedUrl], 'no trip to the IdP');

    assertNoProblems(problems, [], 'SAML SSO with JavaScript');
  });
});

test('SSO from Shibboleth without JavaScript: a visible Continue button posts the SAMLResponse to the ACS', async () => {
  await withPage('saml-sso-nojs', { viewport: DESKTOP, javaScriptEnabled: false }, async ({ page, problems }) => {
    const nav = recordNavigations(page);
    const posts = recordAcsPosts(page);
    await page.goto(sp.protectedUrl);
    assert.ok(page.url().startsWith(`${cas.base}/login?`), `Castellan's login page (at ${page.url()}):\n${show(await hops(nav))}`);
    const authn = authnRequestOf(await hops(nav));
    await assertNamesSp(page, 'SAML login page without JavaScript');
    const spMark = sp.logMark();
    await page.getByLabel('Username').fill(USERS.casuser.username);
    await page.getByLabel('Password', { exact: true }).fill(USERS.casuser.password);
    await Promise.all([
      page.waitForURL((u) => u.href.startsWith(`${cas.base}/idp/callback?`)),
      page.getByLabel('Password', { exact: true }).press('Enter'),
    ]);
    await page.waitForLoadState('load');
    await page.waitForTimeout(500); // a script (none must run) would have submitted by now
    assert.ok(page.url().startsWith(`${cas.base}/idp/callback?`), `still on Castellan without JavaScript (at ${page.url()})`);
    assert.equal(posts.length, 0, 'nothing posted to the ACS yet');
    assert.doesNotMatch(sp.logSince(spMark, 'access.log'), /POST \/Shibboleth\.sso\/SAML2\/POST/, 'nothing reached the ACS yet');

    const forms = page.locator('form');
    assert.equal(await forms.count(), 1, 'one form');
    const form = forms.first();
    assert.equal((await form.getAttribute('method') || '').toLowerCase(), 'post', 'method=post');
    assert.equal(await form.getAttribute('action'), sp.acsUrl, 'the form posts to the ACS of the SP metadata');
    assert.ok(await form.locator('input[type=hidden][name=SAMLResponse]').inputValue(), 'a hidden SAMLResponse');
    assert.equal(await form.locator('input[type=hidden][name=RelayState]').inputValue(), authn.relayState,
      'the hidden RelayState is the AuthnRequest\'s');
    const button = page.getByRole('button', { name: 'Continue' });
    assert.equal(await button.count(), 1, 'a Continue button');
    assert.equal(await button.isVisible(), true, 'the Continue button is visible');
    const box = await button.boundingBox();
    assert.ok(box && box.width > 20 && box.height > 10 && box.y + box.height <= DESKTOP.height,
      `the Continue button is on screen without scrolling: ${show(box)}`);
    const h1 = page.getByRole('heading', { level: 1 });
    assert.equal(await h1.isVisible(), true, 'a visible heading');
    await assertNoHorizontalScroll(page, 'SAMLResponse page at 1280px');
    await shot(page, 'saml-continue-nojs-1280');
    await page.setViewportSize(PHONE);
    await assertNoHorizontalScroll(page, 'SAMLResponse page at 375px');
    assert.equal(await button.isVisible(), true, 'the Continue button is visible at 375px');
    await shot(page, 'saml-continue-nojs-375');
    await page.setViewportSize(DESKTOP);

    await Promise.all([page.waitForURL(sp.protectedUrl, { timeout: 30_000 }), button.click()])
      .catch(async (e) => {
        throw new Error(`${e.message}\nat ${page.url()}\n${show(await hops(nav))}\n${sp.logSince(spMark)}`);
      });
    assert.equal(posts.length, 1, 'one POST to the ACS');
    await checkAcsPost(posts[0], authn, 'SSO without JavaScript');
    const user = await checkEnvPage(page, 'protected page after Continue');
    if (persistentUser) assert.equal(user, persistentUser, 'the same persistent NameID for the same user and SP');
    await shot(page, 'saml-shibboleth-env-nojs');
    assertNoProblems(problems, [], 'SAML SSO without JavaScript');
  });
});

test('an AuthnRequest Castellan must not answer (unregistered SP, ACS not in the metadata): a 400 error page, nothing posted, the browser stays on Castellan', async () => {
  await withPage('saml-error', { viewport: DESKTOP }, async ({ context, page, problems }) => {
    const foreign = [];
    const posts = [];
    page.on('request', (r) => {
      if (r.method() === 'POST') posts.push(`${r.method()} ${r.url()}`);
      if (!r.url().startsWith(cas.origin + '/') && !r.url().startsWith('data:')) foreign.push(`${r.method()} ${r.url()}`);
    });
    const rpBefore = app.rp.length;
    const spMark = sp.logMark();
    // the recorder of the Node app as the ACS: anything sent there is recorded
    const evilAcs = app.url('/rp/acs');
    const cases = [
      ['unregistered SP', redirectAuthnRequest({ issuer: 'http://sp.invalid/unregistered', acsUrl: evilAcs })],
      ['unregistered SP with Shibboleth\'s ACS', redirectAuthnRequest({ issuer: 'http://sp.invalid/unregistered', acsUrl: sp.acsUrl })],
      ['ACS URL not in the SP\'s metadata', redirectAuthnRequest({ issuer: sp.entityId, acsUrl: evilAcs })],
      // the Issuer is echoed on the page: as text, not markup
      ['unregistered SP with markup in its Issuer', redirectAuthnRequest({
        issuer: 'http://sp.invalid/&lt;b id=&quot;injected&quot;&gt;x&lt;/b&gt;', acsUrl: evilAcs })],
    ];
    const urls = [];
    const check = async (what, url) => {
      urls.push(url);
      const response = await page.goto(url);
      await page.waitForLoadState('networkidle');
      await page.waitForTimeout(300);
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
      assert.equal(await page.locator('form').count(), 0, `${what}: no form at all`);
      assert.equal(await page.locator('input[name=SAMLResponse]').count(), 0, `${what}: no SAMLResponse`);
      assert.equal(await page.locator('#injected').count(), 0, `${what}: the request's text is not markup`);
      assert.deepEqual(posts, [], `${what}: nothing posted`);
      assert.deepEqual(foreign, [], `${what}: nothing loaded from outside Castellan`);
      assert.equal(app.rp.length, rpBefore, `${what}: nothing reached the ACS of the request`);
      assert.doesNotMatch(sp.logSince(spMark, 'access.log'), /Shibboleth\.sso\/SAML2\/POST/, `${what}: nothing reached Shibboleth's ACS`);
      return heading;
    };

    for (const [what, url] of cases) await check(what, url);
    await check(cases[0][0], cases[0][1]);
    await shot(page, 'saml-error-1280');
    await page.setViewportSize(PHONE);
    await assertNoHorizontalScroll(page, 'error page at 375px');
    await shot(page, 'saml-error-375');
    await page.setViewportSize(DESKTOP);

    // with an SSO session too: still no answer to anyone
    const login = new URL(`${cas.base}/login`);
    login.searchParams.set('service', app.url('/app/'));
    await page.goto(login.href);
    await page.getByLabel('Username').fill(USERS.casuser.username);
    await page.getByLabel('Password', { exact: true }).fill(USERS.casuser.password);
    await Promise.all([
      page.waitForURL((u) => u.href.startsWith(app.url('/app/'))),
      page.getByRole('button', { name: 'Sign in' }).click(),
    ]);
    assert.ok(await castgc(context), 'signed in');
    foreign.length = 0;
    posts.length = 0;
    for (const [what, url] of cases) await check(`${what}, with an SSO session`, url);

    assertNoProblems(problems, urls, 'SAML error page');
  });
});

test('single logout from Shibboleth (/Shibboleth.sso/Logout) ends the Castellan session: the protected page shows the login form again', async () => {
  await withPage('saml-slo', { viewport: DESKTOP }, async ({ context, page, problems }) => {
    const { user } = await loginThroughShibboleth(page, 'login before the logout');
    if (persistentUser) assert.equal(user, persistentUser, 'the same persistent NameID');
    const tgc = await castgc(context);
    assert.ok(tgc, 'an SSO session at Castellan (CASTGC)');

    const nav = recordNavigations(page);
    const spMark = sp.logMark();
    const logoutUrl = `${sp.handler}/Logout?return=${encodeURIComponent(sp.loggedOutUrl)}`;
    await page.goto(logoutUrl);
    await page.waitForURL(sp.loggedOutUrl, { timeout: 30_000 }).catch(async (e) => {
      throw new Error(`${e.message}\nat ${page.url()}\n${show(await hops(nav))}\n${sp.logSince(spMark)}`);
    });
    const trail = await hops(nav);
    const why = `${show(trail)}\n--- shibd.log ---\n${sp.logSince(spMark)}`;

    // Shibboleth → LogoutRequest → Castellan's SLO endpoint
    const slo = trail.find((h) => /\/cas\/idp\/profile\/SAML2\/(Redirect|POST)\/SLO\b/.test(h.url));
    assert.ok(slo && slo.url.startsWith(cas.base), `the LogoutRequest went to Castellan's SLO endpoint: ${why}`);
    let requestId = null;
    let requestRelay = null;
    if (slo.method === 'GET') {
      const msg = redirectMessage(slo.url);
      assert.ok(startTag(msg?.xml, 'LogoutRequest'), `a LogoutRequest: ${msg?.xml}`);
      requestId = attr(startTag(msg.xml, 'LogoutRequest'), 'ID');
      requestRelay = msg.params.RelayState ?? null;
    }
    // Castellan → signed LogoutResponse (Success) → Shibboleth's Redirect SLO endpoint (the SP has one)
    const back = trail.find((h) => h.url.startsWith(`${sp.sloRedirect}?`));
    assert.ok(back, `Castellan answered at Shibboleth's Redirect SLO endpoint: ${why}`);
    assert.ok([302, 303].includes(slo.status), `Castellan's SLO endpoint redirects: ${why}`);
    const resp = redirectMessage(back.url);
    const rtag = startTag(resp?.xml, 'LogoutResponse');
    assert.ok(rtag, `a LogoutResponse: ${resp?.xml}`);
    assert.equal(statusCode(resp.xml), STATUS_SUCCESS, `LogoutResponse status: ${resp.xml}`);
    assert.equal(attr(rtag, 'Destination'), sp.sloRedirect, 'LogoutResponse Destination');
    assert.equal(text(resp.xml, 'Issuer'), idpEntityId, 'LogoutResponse Issuer');
    assert.ok(resp.params.SigAlg && resp.params.Signature, `the LogoutResponse is signed: ${back.url}`);
    if (requestId) assert.equal(attr(rtag, 'InResponseTo'), requestId, 'InResponseTo is the LogoutRequest\'s ID');
    if (requestRelay) assert.equal(resp.params.RelayState, requestRelay, 'the RelayState comes back');
    assert.equal(back.status, 302, `Shibboleth accepted the LogoutResponse: ${why}`);

    assert.equal(await page.locator('#loggedout').innerText(), 'logged out of the shibboleth sp');
    assert.equal(await castgc(context), undefined, 'CASTGC is cleared');
    await shot(page, 'saml-slo-loggedout');

    // the old CASTGC no longer gives a session
    const r = await fetch(`${cas.base}/login?service=${encodeURIComponent(app.url('/app/'))}`,
      { headers: { Cookie: `CASTGC=${tgc.value}` }, redirect: 'manual' });
    assert.equal(r.status, 200, `the old CASTGC gives no ticket (got ${r.status} ${r.headers.get('location')})`);

    // the protected page: Shibboleth → Castellan's login form again (no SSO)
    const posts = recordAcsPosts(page);
    const mark = nav.length;
    await page.goto(sp.protectedUrl);
    assert.ok(page.url().startsWith(`${cas.base}/login?`),
      `Castellan's login page after the logout (at ${page.url()}):\n${show(await hops(nav.slice(mark)))}`);
    authnRequestOf(await hops(nav.slice(mark)));
    assert.equal(await page.locator('#fm1').isVisible(), true, 'the login form is shown, no SSO');
    await assertNamesSp(page, 'login page after the logout');
    assert.equal(posts.length, 0, 'no SAMLResponse without a login');
    await shot(page, 'saml-slo-login-again');

    assertNoProblems(problems, [], 'SAML single logout');
  });
});
