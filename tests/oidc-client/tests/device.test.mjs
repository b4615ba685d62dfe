// The device authorization grant (RFC 8628) with openid-client: the device
// polls (authorization_pending, slow_down, expired_token, access_denied),
// the user types the code at /oidc/device, signs in through /login and
// confirms the device. Run through tests/oidc-client/run.sh.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as client from 'openid-client';
import {
  Browser, USER, configText, describeError, discover, distinctPorts, parseForm, postForm, sleep, startCastellan,
  startRp, tomlList,
} from '../lib/harness.mjs';
import { assertOAuthError, verifyJwt } from '../lib/checks.mjs';

const DEVICE = { client_id: 'rp-device' };
const GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

const withDeviceClient = (args) => `${configText(args)}
# a TV app: a public client of the device authorization grant
[[services]]
name = "Living-room TV"
protocol = "oidc"
client_id = "${DEVICE.client_id}"
redirect_uris = ${tomlList([`${args.rpOrigin}/device/unused`])}
scopes = ["openid", "email", "offline_access"]
release = ["mail"]
grant_types = ["${GRANT}", "refresh_token"]
`;

async function start(name, oidc = {}) {
  const [port, rpPort] = await distinctPorts(2);
  const rp = await startRp({ port: rpPort });
  let cas;
  try {
    cas = await startCastellan({ port, rpOrigin: rp.origin, name, config: withDeviceClient, oidc });
  } catch (e) {
    await rp.stop();
    throw e;
  }
  return { cas, rp, async stop() { await cas.stop(); await rp.stop(); } };
}

let env;
let cas;
let config;

before(async () => {
  env = await start('device');
  ({ cas } = env);
  config = await discover(cas, DEVICE.client_id, { token_endpoint_auth_method: 'none' }, client.None());
});

after(async () => {
  await env?.stop();
});

const poll = (deviceCode) => postForm(`${cas.issuer}/token`, { grant_type: GRANT, device_code: deviceCode, client_id: DEVICE.client_id });

/** The user's side: the code typed at the page, the login, the confirmation page, a decision. */
async function userAnswers(browser, verificationUri, userCode, decision) {
  // The page shows a form to type the code in (prefilled from verification_uri_complete).
  const pageRes = await browser.request(verificationUri);
  assert.equal(pageRes.status, 200, `GET ${verificationUri}`);
  const codeForm = parseForm(pageRes.body, pageRes.url, '#device-form');
  assert.ok(codeForm, `the code form:\n${pageRes.body.slice(0, 500)}`);
  // Typed by a human: lower case, without the dash.
  const typed = userCode.replace('-', '').toLowerCase();
  const v = await browser.visit(codeForm.action, { method: 'POST', form: { user_code: typed }, login: USER });
  assert.equal(v.location, null, `stays on castellan:\n${browser.trace()}`);
  const confirm = parseForm(v.final.body, v.final.url, '#device-confirm');
  assert.ok(confirm, `the confirmation page after the login (${v.final.status}):\n${browser.trace()}\n${v.final.body.slice(0, 600)}`);
  assert.match(v.final.body, /Living-room TV/, 'the confirmation names the client');
  const done = await browser.request(confirm.action, { method: 'POST', form: { ...confirm.fields, decision } });
  assert.equal(done.status, 200, done.body.slice(0, 300));
  return { loginForms: v.loginForms, done };
}

test('device: discovery publishes the endpoint and the grant type', async () => {
  const meta = await (await fetch(`${cas.issuer}/.well-known/openid-configuration`)).json();
  assert.equal(meta.device_authorization_endpoint, `${cas.issuer}/device_authorization`);
  assert.ok(meta.grant_types_supported.includes(GRANT), JSON.stringify(meta.grant_types_supported));
});

test('device: pending, slow_down, then the user confirms through the page and the device gets its tokens once', async () => {
  let da;
  try {
    da = await client.initiateDeviceAuthorization(config, { scope: 'openid email offline_access' });
  } catch (e) {
    assert.fail(`initiateDeviceAuthorization: ${describeError(e)}\n${cas.log()}`);
  }
  assert.match(da.user_code, /^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/, da.user_code);
  assert.ok(da.device_code.length >= 22, 'device_code of 128 bits or more');
  assert.equal(da.verification_uri, `${cas.issuer}/device`);
  assert.equal(da.interval, 5);
  assert.ok(da.expires_in > 0);

  const first = await poll(da.device_code);
  assert.equal(first.status, 400, first.text);
  assert.equal(first.json.error, 'authorization_pending');
  // At once again: too fast.
  const fast = await poll(da.device_code);
  assert.equal(fast.json?.error, 'slow_down', fast.text);

  const browser = new Browser(cas);
  const { loginForms } = await userAnswers(browser, da.verification_uri_complete, da.user_code, 'approve');
  assert.equal(loginForms, 1, 'the user signed in at /login');

  // The device waits out its (slowed-down) interval, then gets the tokens.
  await sleep(10_500);
  const tokens = await poll(da.device_code);
  assert.equal(tokens.status, 200, tokens.text);
  assert.ok(tokens.json.access_token && tokens.json.refresh_token && tokens.json.id_token);
  const { payload } = await verifyJwt(cas, tokens.json.id_token, { issuer: cas.issuer, audience: DEVICE.client_id }, 'the ID token');
  assert.equal(payload.sub, USER.username);
  assert.equal(payload.email, USER.attributes.mail);
  const info = await client.fetchUserInfo(config, tokens.json.access_token, USER.username);
  assert.equal(info.email, USER.attributes.mail);
  // The code is one-time.
  await sleep(5_100);
  const again = await poll(da.device_code);
  assert.equal(again.status, 400);
  assert.equal(again.json.error, 'invalid_grant', again.text);
  // So is the user code.
  const reuse = await browser.request(`${cas.issuer}/device`, { method: 'POST', form: { user_code: da.user_code } });
  assert.equal(reuse.status, 400);
  assert.match(reuse.body, /id="device-error"/);
});

test('device: openid-client polls until the user confirms (SSO: no second login)', async () => {
  const da = await client.initiateDeviceAuthorization(config, { scope: 'openid' });
  const browser = new Browser(cas);
  // A session first (the user is signed in already).
  await browser.visit(`${cas.base}/login`, { login: USER });
  const polling = client.pollDeviceAuthorizationGrant(config, da);
  const { loginForms } = await userAnswers(browser, da.verification_uri, da.user_code, 'approve');
  assert.equal(loginForms, 0, 'SSO: no login form');
  let tokens;
  try {
    tokens = await polling;
  } catch (e) {
    assert.fail(`pollDeviceAuthorizationGrant: ${describeError(e)}\n${cas.log()}`);
  }
  assert.equal(tokens.claims().sub, USER.username);
});

test('device: the user denies; the device is told access_denied', async () => {
  const da = await client.initiateDeviceAuthorization(config, { scope: 'openid' });
  const { done } = await userAnswers(new Browser(cas), da.verification_uri_complete, da.user_code, 'deny');
  assert.match(done.body, /id="message"/);
  const e = await (async () => {
    try { return await client.pollDeviceAuthorizationGrant(config, da); } catch (err) { return err; }
  })();
  assertOAuthError(e, 'access_denied', 400, 'a denied device');
});

test('device: an unknown code is refused on the page', async () => {
  const browser = new Browser(cas);
  const r = await browser.request(`${cas.issuer}/device`, { method: 'POST', form: { user_code: 'BCDF-GHJK' } });
  assert.equal(r.status, 400);
  assert.match(r.body, /id="device-error"/);
  const junk = await browser.request(`${cas.issuer}/device`, { method: 'POST', form: { user_code: 'x'.repeat(5000) } });
  assert.equal(junk.status, 400);
});

test('device: a client without the grant type is refused', async () => {
  const r = await postForm(`${cas.issuer}/device_authorization`, { client_id: 'rp-public', scope: 'openid' });
  assert.equal(r.status, 400, r.text);
  assert.equal(r.json.error, 'unauthorized_client');
});

test('device: an expired code is expired_token', async () => {
  const short = await start('device-expiry', { device_code_ttl: '2s' });
  try {
    const r = await postForm(`${short.cas.issuer}/device_authorization`, { client_id: DEVICE.client_id, scope: 'openid' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.expires_in, 2);
    await sleep(2_500);
    const late = await postForm(`${short.cas.issuer}/token`, { grant_type: GRANT, device_code: r.json.device_code, client_id: DEVICE.client_id });
    assert.equal(late.status, 400, late.text);
    assert.equal(late.json.error, 'expired_token');
    // The page refuses its user code too.
    const page = await new Browser(short.cas).request(`${short.cas.issuer}/device`, { method: 'POST', form: { user_code: r.json.user_code } });
    assert.equal(page.status, 400);
  } finally {
    await short.stop();
  }
});

test('device: guessing user codes is throttled per address', async () => {
  const own = await start('device-guesses');
  try {
    const r = await postForm(`${own.cas.issuer}/device_authorization`, { client_id: DEVICE.client_id, scope: 'openid' });
    const browser = new Browser(own.cas);
    for (let i = 0; i < 20; i += 1) {
      const wrong = await browser.request(`${own.cas.issuer}/device`, { method: 'POST', form: { user_code: 'BCDF-GHJK' } });
      assert.equal(wrong.status, 400, `wrong code ${i + 1}`);
    }
    // The 21st try is refused, even with the right code.
    const right = await browser.request(`${own.cas.issuer}/device`, { method: 'POST', form: { user_code: r.json.user_code } });
    assert.equal(right.status, 429, right.body.slice(0, 300));
    assert.match(right.body, /id="device-error"/);
  } finally {
    await own.stop();
  }
});
