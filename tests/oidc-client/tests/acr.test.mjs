// Authentication context with openid-client: acr_values asking for MFA
// (https://refeds.org/profile/mfa, or the short "mfa") from a client that
// does not require it, the `acr` and `amr` claims of the ID token that
// openid-client validated, the password-only answer (sfa, ["pwd"]), a step-up
// that asks only for the code, and prompt=none on a session without MFA
// (interaction_required, which openid-client raises as an authorization
// response error). The harness's Browser plays the user agent; the test is
// also the authenticator app (RFC 6238 codes from the otpauth:// URI of the
// enrolment page). Run through tests/oidc-client/run.sh.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, test } from 'node:test';
import * as client from 'openid-client';
import {
  Browser, CONFIDENTIAL, authorizationRequest, configText, describeError, discover, distinctPorts, parseForm,
  rejects, startCastellan, startRp,
} from '../lib/harness.mjs';
import { query } from '../lib/checks.mjs';

const REFEDS_MFA = 'https://refeds.org/profile/mfa';
const REFEDS_SFA = 'https://refeds.org/profile/sfa';
const USERS = ['acr-mfa', 'acr-short', 'acr-plain', 'acr-none', 'acr-step'];
const pw = (u) => `pw-${u}`;
const login = (u) => ({ username: u, password: pw(u) });
// a CAS service that requires MFA: a way to enrol a user before a test
const ENROL_SERVICE = (rpOrigin) => `${rpOrigin}/mfa-app/`;

let cas;
let rp;
let config;

function mfaConfig(args) {
  const users = USERS.map((u) => `
[[users]]
username = "${u}"
password = "${pw(u)}"
attributes = { mail = "${u}@example.org", cn = "User ${u}" }
`).join('');
  const rpPort = new URL(args.rpOrigin).port;
  return `${configText(args)}
[[services]]
name = "mfa-app"
protocol = "cas"
service = '^http://127\\.0\\.0\\.1:${rpPort}/mfa-app/.*$'
release = ["mail"]
mfa = "required"
${users}
[mfa]
store = "sqlite"
issuer = "Castellan"
`;
}

before(async () => {
  const [port, rpPort] = await distinctPorts(2);
  rp = await startRp({ port: rpPort });
  cas = await startCastellan({ port, rpOrigin: rp.origin, name: 'acr', config: mfaConfig });
  config = await discover(cas, CONFIDENTIAL.client_id, CONFIDENTIAL.client_secret,
    client.ClientSecretBasic(CONFIDENTIAL.client_secret));
  client.enableNonRepudiationChecks(config);
});

after(async () => {
  const exit = await cas?.stop().catch((e) => console.error('stopping castellan:', e));
  await rp?.stop().catch((e) => console.error('stopping the relying party:', e));
  if (exit && exit.signal === null && exit.code !== 0) console.error(`castellan exited with ${exit.code} (see ${cas.logPath})`);
});

// ------------------------------------------------------------------ the authenticator app

function base32(text) {
  const A = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  const out = [];
  for (const ch of String(text).toUpperCase().replace(/=+$/, '')) {
    value = (value << 5) | A.indexOf(ch);
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

function totpAt(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = crypto.createHmac('sha1', base32(secret)).update(counter).digest();
  const off = mac[mac.length - 1] & 0x0f;
  const bin = ((mac[off] & 0x7f) << 24) | (mac[off + 1] << 16) | (mac[off + 2] << 8) | mac[off + 3];
  return String(bin % 1_000_000).padStart(6, '0');
}

/** Codes of steps never used before: the current step, else the next (one step of skew), else wait. */
function phone() {
  let last = -1;
  return {
    secret: null,
    async fresh() {
      for (;;) {
        const now = Date.now() / 1000;
        const cur = Math.floor(now / 30);
        for (const s of [cur, cur + 1]) {
          if (s > last) {
            last = s;
            return totpAt(this.secret, s);
          }
        }
        await new Promise((r) => setTimeout(r, ((cur + 1) * 30 - now) * 1000 + 300));
      }
    },
  };
}

const unescape = (s) => s.replace(/&amp;/g, '&').replace(/&#x2F;/gi, '/').replace(/&#47;/g, '/')
  .replace(/&#x3D;/gi, '=').replace(/&#61;/g, '=').replace(/&quot;/g, '"');

/**
 * From the response `res` (the page after the password, or the SSO step-up),
 * answers the second step: scrapes the otpauth URI when it is the enrolment
 * page, posts the code with every field of form#otp-form, and walks on.
 * Returns { location, enrolment }.
 */
async function secondStep(browser, res, app) {
  const form = parseForm(res.body, res.url, '#otp-form');
  assert.ok(form, `expected the second step (form#otp-form), got ${res.status} at ${res.url}:\n${browser.trace()}\n${res.body.slice(0, 600)}`);
  assert.doesNotMatch(res.body, /<input[^>]*type="?password/i, 'no password field on the second step');
  const m = /<code[^>]*id="otpauth-uri"[^>]*>([^<]*)<\/code>/.exec(res.body);
  if (m) app.secret = new URL(unescape(m[1]).trim()).searchParams.get('secret');
  assert.ok(app.secret, 'no secret: neither an enrolment page nor an enrolled app');
  const r = await browser.request(form.action, { method: 'POST', form: { ...form.fields, otp: await app.fresh() } });
  assert.ok(r.status === 302 || r.status === 303, `the code: ${r.status}\n${r.body.slice(0, 600)}`);
  if (!browser.origins.has(new URL(r.location).origin)) return { location: r.location, enrolment: Boolean(m) };
  const v = await browser.visit(r.location);
  assert.ok(v.location, `not back at the relying party:\n${browser.trace()}`);
  return { location: v.location, enrolment: Boolean(m) };
}

/** A code flow with `params`; the password when the form shows, the second step when asked. */
async function flow(browser, user, app, params = {}, { expectSecondStep = true, expectPassword = true } = {}) {
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback, scope: 'openid profile', ...params });
  const v = await browser.visit(req.url, { login: login(user) });
  assert.equal(v.loginForms, expectPassword ? 1 : 0, `password form shown ${v.loginForms} times:\n${browser.trace()}`);
  let location = v.location;
  let enrolment = false;
  if (expectSecondStep) {
    assert.equal(location, null, `no second step, straight to ${location}:\n${browser.trace()}`);
    ({ location, enrolment } = await secondStep(browser, v.final, app));
  } else {
    assert.ok(location, `did not go back to the relying party:\n${browser.trace()}\n${v.final.body.slice(0, 600)}`);
  }
  const response = new URL(location);
  let tokens;
  try {
    tokens = await client.authorizationCodeGrant(config, response, {
      pkceCodeVerifier: req.codeVerifier, expectedState: req.state, expectedNonce: req.nonce, idTokenExpected: true,
    });
  } catch (e) {
    assert.fail(`code grant failed: ${describeError(e)}\n${browser.trace()}\n--- castellan log:\n${cas.log()}`);
  }
  return { claims: tokens.claims(), enrolment };
}

function assertAmr(claims, expected) {
  assert.ok(Array.isArray(claims.amr), `amr is not an array: ${JSON.stringify(claims.amr)}`);
  assert.deepEqual([...claims.amr].sort(), [...expected].sort(), `amr ${JSON.stringify(claims.amr)}`);
}

// ------------------------------------------------------------------ tests

test('discovery: acr_values_supported lists https://refeds.org/profile/mfa', () => {
  const md = config.serverMetadata();
  assert.ok(Array.isArray(md.acr_values_supported) && md.acr_values_supported.includes(REFEDS_MFA),
    `acr_values_supported: ${JSON.stringify(md.acr_values_supported)}`);
});

test('acr_values=https://refeds.org/profile/mfa from a client without mfa: enrolment, then acr and amr say MFA', async () => {
  const browser = new Browser(cas);
  const app = phone();
  const { claims, enrolment } = await flow(browser, 'acr-mfa', app, { acr_values: REFEDS_MFA });
  assert.ok(enrolment, 'a user without a factor is led through enrolment');
  assert.equal(claims.acr, REFEDS_MFA);
  assertAmr(claims, ['pwd', 'otp', 'mfa']);
  // the session has MFA: asked again, served without any form
  const again = await flow(browser, 'acr-mfa', app, { acr_values: REFEDS_MFA },
    { expectSecondStep: false, expectPassword: false });
  assert.equal(again.claims.acr, REFEDS_MFA);
  assertAmr(again.claims, ['pwd', 'otp', 'mfa']);
});

test('acr_values=mfa: acr is the satisfied entry', async () => {
  const { claims } = await flow(new Browser(cas), 'acr-short', phone(), { acr_values: 'mfa' });
  assert.equal(claims.acr, 'mfa');
  assertAmr(claims, ['pwd', 'otp', 'mfa']);
});

test('no acr_values on a client without mfa: the password only, acr sfa and amr ["pwd"]', async () => {
  const { claims } = await flow(new Browser(cas), 'acr-plain', phone(), {}, { expectSecondStep: false });
  assert.equal(claims.acr, REFEDS_SFA);
  assertAmr(claims, ['pwd']);
});

test('step-up: a password session asked for MFA gets the code page only', async () => {
  // enrol first, through the CAS service that requires MFA
  const app = phone();
  const enroller = new Browser(cas);
  const service = ENROL_SERVICE(rp.origin);
  const v = await enroller.visit(`${cas.base}/login?service=${encodeURIComponent(service)}`, { login: login('acr-step') });
  assert.equal(v.location, null, `no second step for a CAS service with mfa = "required":\n${enroller.trace()}`);
  const { enrolment, location } = await secondStep(enroller, v.final, app);
  assert.ok(enrolment && location.startsWith(service), location);

  const browser = new Browser(cas);
  const first = await flow(browser, 'acr-step', app, {}, { expectSecondStep: false });
  assertAmr(first.claims, ['pwd']);
  const stepped = await flow(browser, 'acr-step', app, { acr_values: REFEDS_MFA }, { expectPassword: false });
  assert.ok(!stepped.enrolment);
  assert.equal(stepped.claims.acr, REFEDS_MFA);
  assertAmr(stepped.claims, ['pwd', 'otp', 'mfa']);
  assert.equal(stepped.claims.sub, first.claims.sub);
});

test('prompt=none with acr_values=mfa on a session without MFA: interaction_required', async () => {
  const browser = new Browser(cas);
  await flow(browser, 'acr-none', phone(), {}, { expectSecondStep: false });
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback, prompt: 'none', acr_values: REFEDS_MFA });
  const v = await browser.visit(req.url, { login: null });
  assert.ok(v.location, `prompt=none must redirect back:\n${browser.trace()}`);
  const response = new URL(v.location);
  const q = query(response);
  assert.equal(q.error, 'interaction_required', `error: ${response}`);
  assert.equal(q.state, req.state);
  assert.equal(q.code, undefined);
  const e = await rejects(() => client.authorizationCodeGrant(config, response, {
    pkceCodeVerifier: req.codeVerifier, expectedState: req.state, expectedNonce: req.nonce,
  }), 'authorizationCodeGrant of an interaction_required response');
  assert.ok(e instanceof client.AuthorizationResponseError, describeError(e));
  assert.equal(e.error, 'interaction_required');
});
