// Attribute release consent with openid-client: a client registered with
// `consent = true` gets no code until the user accepted, on Castellan's
// consent page, the claims its scopes release (names and values shown);
// the decision is remembered (a new login goes straight back), prompt=consent
// asks again, a decline is answered with access_denied at the redirect_uri
// (openid-client raises it as an authorization response error), and
// prompt=none without a decision is consent_required. Run through
// tests/oidc-client/run.sh.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as client from 'openid-client';
import {
  Browser, authorizationRequest, configText, describeError, discover, distinctPorts, parseForm, rejects,
  startCastellan, startRp,
} from '../lib/harness.mjs';
import { query } from '../lib/checks.mjs';

const RP = { client_id: 'rp-consent', client_secret: 'consent-secret-51e7' };
const USERS = ['c-accept', 'c-decline', 'c-none'];
const pw = (u) => `pw-${u}`;
const login = (u) => ({ username: u, password: pw(u) });

let cas;
let rp;
let config;
let redirectUri;

function consentConfig(args) {
  const users = USERS.map((u) => `
[[users]]
username = "${u}"
password = "${pw(u)}"
attributes = { mail = "${u}@example.org", cn = "User ${u}", secret = "not-for-rp" }
`).join('');
  return `${configText(args)}
[[services]]
name = "Consent RP"
protocol = "oidc"
client_id = "${RP.client_id}"
client_secret = "${RP.client_secret}"
redirect_uris = ["${args.rpOrigin}/consent/callback"]
scopes = ["openid", "profile", "email"]
release = ["mail", "cn"]
consent = true
${users}
[mfa]
store = "sqlite"
`;
}

before(async () => {
  const [port, rpPort] = await distinctPorts(2);
  rp = await startRp({ port: rpPort });
  redirectUri = `${rp.origin}/consent/callback`;
  cas = await startCastellan({ port, rpOrigin: rp.origin, name: 'consent', config: consentConfig });
  config = await discover(cas, RP.client_id, RP.client_secret, client.ClientSecretBasic(RP.client_secret));
});

after(async () => {
  await cas?.stop().catch((e) => console.error('stopping castellan:', e));
  await rp?.stop().catch((e) => console.error('stopping the relying party:', e));
});

/** The authorization request; the password when asked. Returns { req, v } (v.final: the page it stopped at). */
async function start(browser, user, params = {}) {
  const req = await authorizationRequest(config, { redirect_uri: redirectUri, scope: 'openid email profile', ...params });
  const v = await browser.visit(req.url, { login: user ? login(user) : null });
  return { req, v };
}

function consentForm(browser, v) {
  assert.equal(v.location, null, `went back without asking:\n${browser.trace()}`);
  const form = parseForm(v.final.body, v.final.url, '#consent-form');
  assert.ok(form, `expected the consent page, got ${v.final.status}:\n${browser.trace()}\n${v.final.body.slice(0, 600)}`);
  return form;
}

async function decide(browser, form, decision) {
  const r = await browser.request(form.action, { method: 'POST', form: { ...form.fields, decision } });
  assert.equal(r.status, 302, `the decision: ${r.status}\n${r.body.slice(0, 600)}`);
  const v = await browser.visit(r.location);
  assert.ok(v.location?.startsWith(redirectUri), `not back at the relying party:\n${browser.trace()}`);
  return new URL(v.location);
}

async function grant(req, response) {
  try {
    return await client.authorizationCodeGrant(config, response, {
      pkceCodeVerifier: req.codeVerifier, expectedState: req.state, expectedNonce: req.nonce, idTokenExpected: true,
    });
  } catch (e) {
    assert.fail(`code grant failed: ${describeError(e)}\n--- castellan log:\n${cas.log()}`);
  }
}

test('accept: the page shows the claims and values, then the code; remembered; prompt=consent asks again', async () => {
  const browser = new Browser(cas);
  const { req, v } = await start(browser, 'c-accept');
  const form = consentForm(browser, v);
  const page = v.final.body;
  assert.match(page, /c-accept@example\.org/, 'the email value is shown');
  assert.match(page, /User c-accept/, 'the name value is shown');
  assert.doesNotMatch(page, /not-for-rp/, 'what is not released is not shown');
  const tokens = await grant(req, await decide(browser, form, 'accept'));
  const claims = tokens.claims();
  assert.equal(claims.sub, 'c-accept');
  const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  assert.equal(info.email, 'c-accept@example.org');

  // a new browser, a new login: no page
  const other = new Browser(cas);
  const again = await start(other, 'c-accept');
  assert.ok(again.v.location?.startsWith(redirectUri), `asked again:\n${other.trace()}`);
  assert.ok(query(again.v.location).code, again.v.location);

  // prompt=consent on the SSO session: the page again
  const forced = await start(browser, null, { prompt: 'consent' });
  const form2 = consentForm(browser, forced.v);
  const tokens2 = await grant(forced.req, await decide(browser, form2, 'accept'));
  assert.equal(tokens2.claims().sub, 'c-accept');
});

test('decline: access_denied at the redirect_uri, no code', async () => {
  const browser = new Browser(cas);
  const { req, v } = await start(browser, 'c-decline');
  const response = await decide(browser, consentForm(browser, v), 'decline');
  const q = query(response);
  assert.equal(q.error, 'access_denied', response.href);
  assert.equal(q.code, undefined);
  assert.equal(q.state, req.state);
  const e = await rejects(() => client.authorizationCodeGrant(config, response, {
    pkceCodeVerifier: req.codeVerifier, expectedState: req.state, expectedNonce: req.nonce,
  }), 'authorizationCodeGrant of an access_denied response');
  assert.ok(e instanceof client.AuthorizationResponseError, describeError(e));
  assert.equal(e.error, 'access_denied');
});

test('prompt=none on a session without a decision: consent_required', async () => {
  const browser = new Browser(cas);
  // a session, through the CAS application of the harness's configuration
  const service = `${rp.origin}/app/`;
  const s = await browser.visit(`${cas.base}/login?service=${encodeURIComponent(service)}`, { login: login('c-none') });
  assert.ok(s.location?.startsWith(service), browser.trace());
  const { req, v } = await start(browser, null, { prompt: 'none' });
  assert.ok(v.location, `prompt=none must redirect back:\n${browser.trace()}`);
  const response = new URL(v.location);
  const q = query(response);
  assert.equal(q.error, 'consent_required', response.href);
  assert.equal(q.state, req.state);
  const e = await rejects(() => client.authorizationCodeGrant(config, response, {
    pkceCodeVerifier: req.codeVerifier, expectedState: req.state, expectedNonce: req.nonce,
  }), 'authorizationCodeGrant of a consent_required response');
  assert.equal(e.error, 'consent_required');
});
