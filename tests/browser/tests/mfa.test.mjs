// Multi-factor authentication in a real browser (Debian's Chromium): the
// second-step pages by keyboard only, labelled, with the right input hints and
// without horizontal scrolling at 375 px; passkeys (WebAuthn) through a CDP
// virtual authenticator: enrolment at the second step, sign-in with the
// passkey, what the protocols then say (CAS authenticationMethod, OIDC amr),
// a platform authenticator, and a cloned credential whose signature counter
// went backwards, refused.
//
// Castellan's public_url is http://localhost:PORT/cas: WebAuthn needs a
// domain as relying-party id (an IP address is refused by the browser), and
// localhost is a secure context. The CAS applications stay on 127.0.0.1.
// Run through tests/browser/run.sh.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, test } from 'node:test';
import {
  addVirtualAuthenticator, freePort, launchBrowser, noHorizontalScroll, otpauthSecret, realProblems, shot,
  startApp, startCastellan, totpAt, watchProblems,
} from '../lib/harness.mjs';

let cas;
let app; // plain CAS service (demo-app)
let mfaApp; // CAS service with mfa = "required"; its /rp/ paths are the OIDC client's redirect_uri
let browser;

const OIDC = { clientId: 'mfa-rp', secret: 'mfa-rp-secret-0123456789' };
const pw = (user) => `pw-${user}`;
const MFA_USERS = ['kbd', 'kbd-wrong', 'passkey', 'internal', 'clone'];

before(async () => {
  const ports = new Set();
  while (ports.size < 3) ports.add(await freePort());
  const [port, appPort, mfaPort] = [...ports];
  const casBase = `http://localhost:${port}/cas`;
  app = await startApp({ port: appPort, casBase });
  mfaApp = await startApp({ port: mfaPort, casBase });
  const users = MFA_USERS.map((u) => `
[[users]]
username = "${u}"
password = "${pw(u)}"
attributes = { mail = "${u}@example.org", cn = "User ${u}" }
`).join('');
  const services = `
[[services]]
name = "mfa-app"
protocol = "cas"
service = '^http://127\\.0\\.0\\.1:${mfaPort}/app/.*$'
release = ["mail", "cn"]
mfa = "required"

[[services]]
name = "mfa-rp"
protocol = "oidc"
client_id = "${OIDC.clientId}"
client_secret = "${OIDC.secret}"
redirect_uris = ["http://127.0.0.1:${mfaPort}/rp/cb"]
scopes = ["openid", "profile", "email"]
release = ["mail", "cn"]
${users}
[mfa]
store = "sqlite"
issuer = "Castellan"
`;
  cas = await startCastellan({ port, appPort, services, host: 'localhost', logName: 'castellan-mfa.log' });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close().catch((e) => console.error('closing chromium:', e));
  const exit = await cas?.stop().catch((e) => console.error('stopping castellan:', e));
  await app?.stop().catch((e) => console.error('stopping the app:', e));
  await mfaApp?.stop().catch((e) => console.error('stopping the mfa app:', e));
  if (exit && exit.signal === null && exit.code !== 0) {
    console.error(`castellan exited with code ${exit.code} on SIGTERM (see ${cas.logPath})`);
  }
});

// ------------------------------------------------------------------ helpers

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 375, height: 812 };

async function withPage(name, options, fn) {
  const context = await browser.newContext({ viewport: DESKTOP, ...options });
  context.setDefaultTimeout(15_000);
  const problems = await watchProblems(context);
  const page = await context.newPage();
  try {
    await fn({ context, page, problems });
  } catch (err) {
    await shot(page, `FAILED-mfa-${name}`).catch(() => {});
    err.message += `\n(castellan log: ${cas.logPath})`;
    throw err;
  } finally {
    await context.close();
  }
}

/** A TOTP app for one secret: codes of steps never used before (current, else next, else wait). */
function totpApp(secret) {
  let last = -1;
  return {
    secret,
    async fresh() {
      for (;;) {
        const now = Date.now() / 1000;
        const cur = Math.floor(now / 30);
        for (const s of [cur, cur + 1]) {
          if (s > last) {
            last = s;
            return totpAt(secret, s);
          }
        }
        await new Promise((r) => setTimeout(r, ((cur + 1) * 30 - now) * 1000 + 300));
      }
    },
  };
}

async function castgc(context) {
  return (await context.cookies(`${cas.base}/`)).find((c) => c.name === 'CASTGC');
}

/** Goes to the MFA app, is sent to Castellan's login, signs in with the password (mouse-free fill). */
async function passwordStep(page, user) {
  await page.goto(mfaApp.url('/app/'));
  assert.ok(page.url().startsWith(`${cas.base}/login?`), `the app sent the browser to Castellan (at ${page.url()})`);
  await page.locator('#username').fill(user);
  await page.locator('#password').fill(pw(user));
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST' && r.url().startsWith(`${cas.base}/login`)),
    page.locator('#password').press('Enter'),
  ]);
  await page.waitForLoadState('load');
  assert.equal(response.status(), 200, `the password for an MFA service answers 200 with the second step (got ${response.status()})`);
  assert.equal(await page.locator('form#otp-form').count(), 1, `one form#otp-form on ${page.url()}`);
  assert.equal(await castgc(page.context()), undefined, 'no CASTGC before the second factor');
  return response;
}

/** Every visible form control has a label (its <label>, aria-label or aria-labelledby); every button a name. */
async function unlabelled(page) {
  return page.evaluate(() => {
    const bad = [];
    for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
      const named = (el.labels && el.labels.length && [...el.labels].some((l) => l.textContent.trim()))
        || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
      if (!named) bad.push(`${el.tagName.toLowerCase()}[name=${el.name}]#${el.id}`);
    }
    for (const el of document.querySelectorAll('button, input[type=submit]')) {
      if (!(el.textContent.trim() || el.value || el.getAttribute('aria-label'))) bad.push(`button#${el.id}`);
    }
    return bad;
  });
}

async function assertNoHorizontalScroll(page, where) {
  const m = await noHorizontalScroll(page);
  const limit = Math.min(m.innerWidth, m.clientWidth);
  assert.ok(m.scrollWidth <= limit,
    `${where}: horizontal scroll (scrollWidth ${m.scrollWidth} > ${limit}, innerWidth ${m.innerWidth}, clientWidth ${m.clientWidth})`);
}

function assertNoProblems(problems, documentUrls, where) {
  assert.deepEqual(realProblems(problems, documentUrls), [], `${where}: console errors / page errors / CSP violations`);
}

/** The texts of the role=alert elements a user sees (an empty box is reported as ''). */
async function visibleAlerts(page) {
  const out = [];
  for (const el of await page.locator('[role=alert]').all()) {
    if (await el.isVisible()) out.push((await el.innerText()).trim());
  }
  return out;
}

/** Tabs (at most 30 times) until the focused element matches `pred`; fails otherwise. */
async function tabTo(page, selector, what) {
  for (let i = 0; i < 30; i += 1) {
    if (await page.evaluate((sel) => document.activeElement?.matches(sel) ?? false, selector)) return i;
    await page.keyboard.press('Tab');
  }
  assert.fail(`Tab never reached ${what} (${selector})`);
  return -1;
}

async function appAttributes(page) {
  const out = {};
  for (const li of await page.locator('li').all()) {
    const name = await li.locator('.name').innerText().catch(() => null);
    if (name) out[name] = (await li.locator('span[id^="attr-"]').innerText()).split(', ');
  }
  return out;
}

/** Runs `action` and waits until the browser is on the MFA app (with a validated ticket). */
async function landOnApp(page, action, what) {
  await Promise.all([
    page.waitForURL((u) => u.href.startsWith(mfaApp.origin), { waitUntil: 'load', timeout: 20_000 })
      .catch(async (e) => {
        const alert = await page.locator('[role=alert]').allInnerTexts().catch(() => []);
        throw new Error(`${what}: not back on the app (at ${page.url()}; alerts: ${JSON.stringify(alert)}): ${e.message}`);
      }),
    action(),
  ]);
  assert.match(new URL(page.url()).searchParams.get('ticket') || '', /^ST-/, `${what}: a ticket`);
  return appAttributes(page);
}

/** Clicks the passkey registration button; waits for the page the registration form's POST leads to. */
async function registerPasskey(page) {
  const before = page.url();
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST' && r.url().startsWith(cas.base), { timeout: 20_000 }),
    page.locator('#passkey-register-button').click(),
  ]);
  await page.waitForURL((u) => u.href !== before, { waitUntil: 'load', timeout: 20_000 });
  return response;
}

/** The OIDC client of this module, on the browser's session: authorize → /rp/cb?code → token → ID token claims. */
async function oidcClaims(page, params = {}) {
  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  const redirectUri = mfaApp.url('/rp/cb');
  const u = new URL(`${cas.base}/oidc/authorize`);
  const q = {
    response_type: 'code', client_id: OIDC.clientId, redirect_uri: redirectUri, scope: 'openid profile',
    state: 's-1', nonce: 'n-1', code_challenge: challenge, code_challenge_method: 'S256', ...params,
  };
  for (const [k, v] of Object.entries(q)) u.searchParams.set(k, v);
  await page.goto(u.href);
  const at = new URL(page.url());
  assert.equal(`${at.origin}${at.pathname}`, redirectUri, `authorize ended at ${page.url()}, not at the redirect_uri`);
  const code = at.searchParams.get('code');
  assert.ok(code, `no code: ${page.url()}`);
  const r = await fetch(`${cas.base}/oidc/token`.replace('localhost', '127.0.0.1'), {
    method: 'POST',
    headers: {
      'Content-Type': 'application/x-www-form-urlencoded',
      Authorization: `Basic ${Buffer.from(`${OIDC.clientId}:${OIDC.secret}`).toString('base64')}`,
    },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier }),
  });
  const body = await r.json();
  assert.equal(r.status, 200, `token: ${JSON.stringify(body)}`);
  return JSON.parse(Buffer.from(body.id_token.split('.')[1], 'base64url').toString('utf8'));
}

// -------------------------------------------------------------------- tests

test('second step by keyboard only at 375 px: enrolment page labelled, one-time-code/numeric hints, no horizontal scroll', async () => {
  await withPage('keyboard', { viewport: PHONE, isMobile: true, hasTouch: true }, async ({ page, problems }) => {
    await passwordStep(page, 'kbd');
    // the enrolment variant: QR code, URI as text, ten recovery codes
    assert.equal(await page.locator('figure#totp-qr svg').count(), 1, 'inline <svg> QR code in figure#totp-qr');
    const uri = (await page.locator('code#otpauth-uri').textContent()).trim();
    assert.match(uri, /^otpauth:\/\/totp\//);
    assert.equal(await page.locator('ol#recovery-codes > li code').count(), 10, 'ten recovery codes');
    assert.equal(await page.locator('input[type=password]').count(), 0, 'no password field on the second step');

    const otp = page.locator('#otp-form input[name=otp]');
    assert.equal(await otp.getAttribute('autocomplete'), 'one-time-code');
    assert.equal(await otp.getAttribute('inputmode'), 'numeric');
    const otpId = await otp.getAttribute('id');
    assert.ok(otpId, 'the otp input has an id');
    assert.ok((await page.locator(`label[for="${otpId}"]`).innerText()).trim(), 'the otp input has a <label for>');
    assert.deepEqual(await unlabelled(page), [], 'unlabelled controls on the enrolment page');
    assert.deepEqual(await visibleAlerts(page), [], 'alerts shown before anything went wrong (a hidden error box shown empty?)');
    await assertNoHorizontalScroll(page, 'enrolment page at 375px');
    await shot(page, 'mfa-enrol-375');

    // keyboard only: Tab to the code field, type, Enter
    const phone = totpApp(otpauthSecret(uri));
    await tabTo(page, '#otp-form input[name=otp]', 'the code field');
    await page.keyboard.type(await phone.fresh());
    const attrs = await landOnApp(page, () => page.keyboard.press('Enter'), 'Enter in the code field');
    assert.equal(await page.locator('#user').innerText(), 'kbd');
    assert.deepEqual((attrs.authenticationMethod || []).sort(), ['Password', 'TOTP'], JSON.stringify(attrs));
    assert.ok(await castgc(page.context()), 'CASTGC after the second factor');
    assertNoProblems(problems, [], 'enrolment by keyboard');
  });
});

test('second step: a wrong code is announced and ties aria-invalid to the field; layout at 375 px', async () => {
  let phone;
  await withPage('enrol-kbd-wrong', { viewport: DESKTOP }, async ({ page }) => {
    await passwordStep(page, 'kbd-wrong');
    phone = totpApp(otpauthSecret((await page.locator('code#otpauth-uri').textContent()).trim()));
    await landOnApp(page, async () => {
      await page.locator('#otp-form input[name=otp]').fill(await phone.fresh());
      await page.locator('#otp-form input[name=otp]').press('Enter');
    }, 'enrolment');
  });
  await withPage('wrong-code', { viewport: PHONE, isMobile: true, hasTouch: true }, async ({ page, problems }) => {
    await passwordStep(page, 'kbd-wrong');
    assert.equal(await page.locator('code#otpauth-uri').count(), 0, 'an enrolled user sees no enrolment');
    assert.deepEqual(await unlabelled(page), [], 'unlabelled controls on the second step');
    assert.deepEqual(await visibleAlerts(page), [], 'alerts on the second step before any error');
    await assertNoHorizontalScroll(page, 'second step at 375px');
    await shot(page, 'mfa-code-375');
    const valid = new Set([-1, 0, 1].map((d) => totpAt(phone.secret, Math.floor(Date.now() / 30000) + d)));
    const wrong = ['000000', '123456', '999999'].find((c) => !valid.has(c));
    await tabTo(page, '#otp-form input[name=otp]', 'the code field');
    await page.keyboard.type(wrong);
    const [response] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && r.url().startsWith(`${cas.base}/login/mfa`)),
      page.keyboard.press('Enter'),
    ]);
    await page.waitForLoadState('load');
    assert.equal(response.status(), 401);
    const field = page.locator('#otp-form input[name=otp]');
    assert.equal(await field.getAttribute('aria-invalid'), 'true', 'the code field is marked invalid');
    const alerts = await visibleAlerts(page);
    assert.ok(alerts.length >= 1 && alerts.every((t) => t), `the error is announced (role=alert), and no empty alert box: ${JSON.stringify(alerts)}`);
    await assertNoHorizontalScroll(page, 'wrong code at 375px');
    await shot(page, 'mfa-wrong-code-375');
    // and the right code still goes through
    await tabTo(page, '#otp-form input[name=otp]', 'the code field after the error');
    await page.keyboard.press('Control+A');
    await page.keyboard.type(await phone.fresh());
    await landOnApp(page, () => page.keyboard.press('Enter'), 'the right code after a wrong one');
    assertNoProblems(problems, [response.url()], 'wrong code');
  });
});

test('passkey (USB security key): enrol at the second step, sign in with it, WebAuthn in CAS, hwk in OIDC amr', async () => {
  await withPage('passkey', { viewport: DESKTOP }, async ({ context, page, problems }) => {
    const auth = await addVirtualAuthenticator(page, { transport: 'usb' });
    await passwordStep(page, 'passkey');
    assert.equal(await page.locator('#passkey-register-button').count(), 1, 'a passkey button on the enrolment page');
    const opts = JSON.parse(await page.locator('script#webauthn-create-options').textContent());
    assert.ok(opts.publicKey?.challenge && opts.publicKey?.user?.id, `creation options: ${JSON.stringify(opts)}`);
    assert.equal(opts.publicKey.rp?.id, 'localhost', 'RP id from public_url');
    await shot(page, 'mfa-passkey-enrol');

    // enrol: the virtual key answers navigator.credentials.create()
    let attrs;
    await registerPasskey(page);
    const { credentials } = await auth.cdp.send('WebAuthn.getCredentials', { authenticatorId: auth.id });
    assert.equal(credentials.length, 1, 'the virtual authenticator holds one credential');
    if (page.url().startsWith(mfaApp.origin)) {
      attrs = await appAttributes(page); // registering was the second factor
    } else {
      // the server wants the new passkey used once: the sign-in button
      assert.equal(await page.locator('#passkey-button').count(), 1, `after registering: ${page.url()}`);
      attrs = await landOnApp(page, () => page.locator('#passkey-button').click(), 'first passkey sign-in');
    }
    assert.ok((attrs.authenticationMethod || []).includes('WebAuthn'), JSON.stringify(attrs));

    // next time: password, then the passkey
    await context.clearCookies();
    await passwordStep(page, 'passkey');
    assert.equal(await page.locator('#passkey-button').count(), 1, 'a passkey sign-in button on the second step');
    const req = JSON.parse(await page.locator('script#webauthn-options').textContent());
    const allowed = (req.publicKey?.allowCredentials || []).map((c) => c.id);
    assert.ok(allowed.includes(credentials[0].credentialId.replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_')),
      `the credential is in allowCredentials: ${JSON.stringify(allowed)} vs ${credentials[0].credentialId}`);
    attrs = await landOnApp(page, () => page.locator('#passkey-button').click(), 'passkey sign-in');
    assert.equal(await page.locator('#user').innerText(), 'passkey');
    assert.deepEqual((attrs.authenticationMethod || []).sort(), ['Password', 'WebAuthn'], JSON.stringify(attrs));
    const after = (await auth.cdp.send('WebAuthn.getCredentials', { authenticatorId: auth.id })).credentials[0];
    assert.ok(after.signCount > credentials[0].signCount, 'the key signed (its counter moved)');

    // the same session through OIDC: amr says a hardware key
    const claims = await oidcClaims(page, { acr_values: 'https://refeds.org/profile/mfa' });
    assert.ok(Array.isArray(claims.amr) && claims.amr.includes('pwd') && claims.amr.includes('hwk'),
      `amr ${JSON.stringify(claims.amr)} (expected pwd and hwk)`);
    assert.equal(claims.acr, 'https://refeds.org/profile/mfa');
    assertNoProblems(problems, [], 'passkey');
  });
});

test('passkey on a platform authenticator (transport internal): enrol and sign in', async () => {
  await withPage('passkey-internal', { viewport: DESKTOP }, async ({ context, page, problems }) => {
    const auth = await addVirtualAuthenticator(page, { transport: 'internal' });
    await passwordStep(page, 'internal');
    await registerPasskey(page);
    const { credentials } = await auth.cdp.send('WebAuthn.getCredentials', { authenticatorId: auth.id });
    assert.equal(credentials.length, 1, `the platform authenticator made a credential (at ${page.url()})`);
    await context.clearCookies();
    await passwordStep(page, 'internal');
    const attrs = await landOnApp(page, () => page.locator('#passkey-button').click(), 'platform passkey sign-in');
    assert.deepEqual((attrs.authenticationMethod || []).sort(), ['Password', 'WebAuthn'], JSON.stringify(attrs));
    assertNoProblems(problems, [], 'platform passkey');
  });
});

test('a cloned passkey whose signature counter went backwards is refused', async () => {
  let cred;
  await withPage('clone-original', { viewport: DESKTOP }, async ({ context, page }) => {
    const auth = await addVirtualAuthenticator(page);
    await passwordStep(page, 'clone');
    await registerPasskey(page);
    // two sign-ins with the original: the server has seen its counter move on
    for (let i = 0; i < 2; i += 1) {
      await context.clearCookies();
      await passwordStep(page, 'clone');
      await landOnApp(page, () => page.locator('#passkey-button').click(), `original key, sign-in ${i + 1}`);
    }
    [cred] = (await auth.cdp.send('WebAuthn.getCredentials', { authenticatorId: auth.id })).credentials;
    assert.ok(cred.signCount >= 2, `counter of the original: ${cred.signCount}`);
  });
  await withPage('clone-copy', { viewport: DESKTOP }, async ({ page, problems }) => {
    const auth = await addVirtualAuthenticator(page);
    // the same key material, its counter rolled back
    await auth.cdp.send('WebAuthn.addCredential', {
      authenticatorId: auth.id,
      credential: { ...cred, signCount: 0 },
    });
    await passwordStep(page, 'clone');
    const [response] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && r.url().startsWith(cas.base)),
      page.locator('#passkey-button').click(),
    ]);
    await page.waitForLoadState('load');
    assert.ok(!page.url().startsWith(mfaApp.origin), `the clone signed in: ${page.url()}`);
    assert.ok(response.status() >= 400 && response.status() < 500, `clone: status ${response.status()}`);
    assert.equal(await castgc(page.context()), undefined, 'no CASTGC for the clone');
    const used = (await auth.cdp.send('WebAuthn.getCredentials', { authenticatorId: auth.id })).credentials[0];
    assert.ok(used.signCount >= 1 && used.signCount < cred.signCount, `the clone did sign, with counter ${used.signCount}`);
    assertNoProblems(problems, [response.url()], 'clone');
  });
});
