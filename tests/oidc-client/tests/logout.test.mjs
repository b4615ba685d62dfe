// RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) with
// openid-client's buildEndSessionUrl, and OpenID Connect Back-Channel Logout
// 1.0 logout tokens received by the relying party's server, verified with jose.
// Run through tests/oidc-client/run.sh.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as client from 'openid-client';
import * as jose from 'jose';
import {
  Browser, CONFIDENTIAL, PAIRWISE, USER, authorizationRequest, authorize, codeFlow, describeError, discover,
  rejects, sleep, startAll,
} from '../lib/harness.mjs';
import { assertOAuthError, jwks, now, query, scopes } from '../lib/checks.mjs';

const BCL_EVENT = 'http://schemas.openid.net/event/backchannel-logout';

let env;
let cas;
let rp;
let config;

before(async () => {
  env = await startAll('logout');
  ({ cas, rp } = env);
  config = await discover(cas, CONFIDENTIAL.client_id, CONFIDENTIAL.client_secret, client.ClientSecretBasic(CONFIDENTIAL.client_secret));
});

after(async () => {
  await env?.stop();
});

async function login(browser, params = {}) {
  try {
    return await codeFlow(browser, config, { redirectUri: rp.urls.callback, params: { scope: 'openid profile', ...params } });
  } catch (e) {
    assert.fail(`code flow failed: ${describeError(e)}\n${browser.trace()}\n--- castellan log:\n${cas.log()}`);
  }
  return null;
}

/** The logout tokens received so far for session `sid` (decoded, unverified). */
function logoutTokensFor(sid) {
  return rp.backchannel
    .map((e) => new URLSearchParams(e.body).get('logout_token'))
    .filter(Boolean)
    .filter((t) => {
      try { return jose.decodeJwt(t).sid === sid; } catch { return false; }
    });
}

/** Verifies a logout token as an RP must (Back-Channel Logout 1.0 §2.6); returns its claims. */
async function validateLogoutToken(token, { sid }) {
  const { keys } = await jwks(cas);
  let verified;
  try {
    verified = await jose.jwtVerify(token, keys, { issuer: cas.issuer, audience: CONFIDENTIAL.client_id, maxTokenAge: '2m' });
  } catch (e) {
    assert.fail(`the logout token does not verify (${e.code || e.name}: ${e.message}): ${JSON.stringify(jose.decodeProtectedHeader(token))} ${JSON.stringify(jose.decodeJwt(token))}`);
  }
  const { payload: p, protectedHeader: h } = verified;
  assert.notEqual(h.alg, 'none');
  if (h.typ !== undefined) assert.match(h.typ, /^(application\/)?logout\+jwt$/i, `typ logout+jwt when present (§2.4): ${h.typ}`);
  assert.ok(Number.isInteger(p.iat) && Math.abs(p.iat - now()) <= 60, `iat ${p.iat}`);
  assert.ok(Number.isInteger(p.exp) && p.exp > now(), `exp ${p.exp}`);
  assert.ok(typeof p.jti === 'string' && p.jti.length > 0, 'jti');
  assert.ok(p.events && typeof p.events === 'object', `events: ${JSON.stringify(p.events)}`);
  assert.deepEqual(p.events[BCL_EVENT], {}, `events has the back-channel logout member with value {}: ${JSON.stringify(p.events)}`);
  assert.equal(p.sid, sid, 'sid is the ID token\'s sid');
  assert.equal(p.sub, USER.username, 'sub is the ID token\'s sub');
  assert.equal(p.nonce, undefined, 'a logout token MUST NOT contain a nonce (§2.4)');
  return p;
}

test('RP-initiated logout: redirect to post_logout_redirect_uri with state, session ended, back-channel logout token', async () => {
  // another session of the same user at the same client: it must survive
  const bystander = new Browser(cas);
  const other = await login(bystander);

  const browser = new Browser(cas);
  const { tokens } = await login(browser);
  const idToken = tokens.id_token;
  const { sid } = tokens.claims();
  assert.ok(sid, 'the ID token has a sid');
  assert.notEqual(other.tokens.claims().sid, sid, 'two sessions, two sids');
  assert.ok(browser.cookie('CASTGC'), 'signed in');

  const state = client.randomState();
  const url = client.buildEndSessionUrl(config, {
    id_token_hint: idToken,
    post_logout_redirect_uri: rp.urls.loggedOut,
    state,
  });
  assert.equal(`${url.origin}${url.pathname}`, `${cas.issuer}/logout`, 'end_session_endpoint');
  const v = await browser.visit(url.href);
  assert.ok(v.location, `logout redirects to the relying party:\n${browser.trace()}\n  body: ${v.final.body.slice(0, 300)}`);
  const back = new URL(v.location);
  assert.equal(`${back.origin}${back.pathname}`, rp.urls.loggedOut, 'to the registered post_logout_redirect_uri');
  assert.equal(back.searchParams.get('state'), state, 'with the state');
  assert.equal(browser.cookie('CASTGC'), undefined, `CASTGC cleared:\n${browser.trace()}`);

  // the back-channel logout token for this session
  const got = await rp.waitBackchannel(() => logoutTokensFor(sid).length > 0, 5_000);
  assert.ok(got, `a logout token with sid ${sid} reached ${rp.urls.backchannel}; received: ${JSON.stringify(rp.backchannel.map((e) => e.body))}\n${cas.log()}`);
  const entry = rp.backchannel.find((e) => new URLSearchParams(e.body).get('logout_token') === logoutTokensFor(sid)[0]);
  assert.equal(entry.method, 'POST');
  assert.match(entry.headers['content-type'] || '', /^application\/x-www-form-urlencoded\b/, 'form-encoded POST (§2.5)');
  const tokensFor = logoutTokensFor(sid);
  assert.equal(tokensFor.length, 1, 'one logout token for the session');
  await validateLogoutToken(tokensFor[0], { sid });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(logoutTokensFor(other.tokens.claims().sid).length, 0, 'no logout token for the other session');

  // no session any more: prompt=none is login_required
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback, prompt: 'none' });
  const { response, loginForms } = await authorize(browser, req.url, { login: null, redirectUri: rp.urls.callback });
  assert.equal(loginForms, 0, 'no login form with prompt=none');
  const q = query(response);
  assert.equal(q.error, 'login_required', `error=login_required: ${response}`);
  assert.equal(q.state, req.state, 'state with the error');
  assert.equal(q.code, undefined, 'no code');
  if (q.iss !== undefined) assert.equal(q.iss, cas.issuer);
  const e = await rejects(() => client.authorizationCodeGrant(config, response, {
    pkceCodeVerifier: req.codeVerifier, expectedState: req.state, expectedNonce: req.nonce,
  }), 'authorizationCodeGrant of a login_required response');
  assert.ok(e instanceof client.AuthorizationResponseError, describeError(e));
  assert.equal(e.error, 'login_required');

  // the refresh token died with the SSO session (no offline_access)
  const r = await rejects(() => client.refreshTokenGrant(config, tokens.refresh_token), 'refresh after logout');
  assertOAuthError(r, 'invalid_grant', 400, 'refresh token of an ended session');

  // the bystander's session is untouched
  const still = await login(bystander, { prompt: 'none' });
  assert.equal(still.tokens.claims().sid, other.tokens.claims().sid, 'the other session still works');
});

test('offline_access: the refresh token outlives the SSO session', async () => {
  const browser = new Browser(cas);
  const { tokens } = await login(browser, { scope: 'openid offline_access' });
  assert.ok(scopes(tokens.scope).includes('offline_access'), `offline_access granted: ${tokens.scope}`);
  const v = await browser.visit(client.buildEndSessionUrl(config, { id_token_hint: tokens.id_token }).href);
  assert.equal(browser.cookie('CASTGC'), undefined, `signed out:\n${browser.trace()} ${v.final.status}`);
  let refreshed;
  try {
    refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  } catch (e) {
    assert.fail(`refresh of an offline_access grant after logout: ${describeError(e)}`);
  }
  assert.ok(refreshed.access_token);
});

test('logout with client_id instead of id_token_hint, and without post_logout_redirect_uri (signed-out page)', async () => {
  const browser = new Browser(cas);
  await login(browser);
  const state = client.randomState();
  const v = await browser.visit(client.buildEndSessionUrl(config, { post_logout_redirect_uri: rp.urls.loggedOut, state }).href);
  assert.ok(v.location, `redirected:\n${browser.trace()}`);
  assert.equal(v.location, `${rp.urls.loggedOut}?state=${state}`, 'to post_logout_redirect_uri?state=');
  assert.equal(browser.cookie('CASTGC'), undefined, 'signed out');

  const b2 = new Browser(cas);
  const { tokens } = await login(b2);
  const v2 = await b2.visit(client.buildEndSessionUrl(config, { id_token_hint: tokens.id_token }).href);
  assert.equal(v2.location, null, `no redirect without post_logout_redirect_uri:\n${b2.trace()}`);
  assert.equal(v2.final.status, 200, 'a signed-out page');
  assert.equal(b2.cookie('CASTGC'), undefined, 'signed out');
});

test('post_logout_redirect_uri: never redirected to one not registered for the client of the id_token_hint', async () => {
  // unregistered URI
  const browser = new Browser(cas);
  const { tokens } = await login(browser);
  const evil = `${rp.origin}/evil`;
  const v = await browser.visit(client.buildEndSessionUrl(config, { id_token_hint: tokens.id_token, post_logout_redirect_uri: evil, state: 'x' }).href);
  assert.ok(!v.location || !v.location.startsWith(evil), `not redirected to an unregistered URI:\n${browser.trace()}`);
  assert.equal(rp.requests.filter((r) => r.url.startsWith('/evil')).length, 0);

  // registered for another client (logged-out is registered for the confidential and public clients,
  // not for the pairwise client named by this id_token_hint)
  const pconfig = await discover(cas, PAIRWISE.client_id, PAIRWISE.client_secret, client.ClientSecretBasic(PAIRWISE.client_secret));
  const b2 = new Browser(cas);
  const p = await codeFlow(b2, pconfig, { redirectUri: rp.urls.pairwiseCallback, params: { scope: 'openid' } });
  const url = client.buildEndSessionUrl(pconfig, { id_token_hint: p.tokens.id_token, post_logout_redirect_uri: rp.urls.loggedOut, state: 'y' });
  const v2 = await b2.visit(url.href);
  assert.ok(!v2.location || !v2.location.startsWith(rp.urls.loggedOut),
    `not redirected to a URI registered for another client:\n${b2.trace()}`);
});

test('CAS /cas/logout also sends the OIDC back-channel logout token', async () => {
  const browser = new Browser(cas);
  const { tokens } = await login(browser);
  const { sid } = tokens.claims();
  const v = await browser.visit(`${cas.base}/logout`);
  assert.equal(v.final.status, 200, `CAS logout page:\n${browser.trace()}`);
  assert.equal(browser.cookie('CASTGC'), undefined, 'CASTGC cleared');
  const got = await rp.waitBackchannel(() => logoutTokensFor(sid).length > 0, 5_000);
  assert.ok(got, `a logout token with sid ${sid}; received: ${JSON.stringify(rp.backchannel.map((e) => e.body))}`);
  await validateLogoutToken(logoutTokensFor(sid)[0], { sid });
});

test('RP-initiated logout also sends the CAS back-channel logoutRequest to the CAS services of the session', async () => {
  const browser = new Browser(cas);
  const v = await browser.visit(`${cas.base}/login?service=${encodeURIComponent(rp.urls.casApp)}`, { login: USER });
  const st = new URL(v.location || 'http://x/').searchParams.get('ticket');
  assert.match(st || '', /^ST-/, `CAS login:\n${browser.trace()}`);
  const { tokens } = await login(browser);
  const { sid } = tokens.claims();

  await browser.visit(client.buildEndSessionUrl(config, { id_token_hint: tokens.id_token, post_logout_redirect_uri: rp.urls.loggedOut }).href);
  const slo = () => rp.requests.filter((r) => r.method === 'POST' && r.url.startsWith('/app/')
    && (new URLSearchParams(r.body).get('logoutRequest') || '').includes(st));
  assert.ok(await rp.waitBackchannel(() => slo().length > 0 && logoutTokensFor(sid).length > 0, 5_000),
    `a CAS logoutRequest for ${st} at /app/ and a logout token for sid ${sid}; the relying party got: ${
      JSON.stringify(rp.requests.slice(-5).map((r) => `${r.method} ${r.url} ${r.body.slice(0, 120)}`))}`);
  const xml = new URLSearchParams(slo()[0].body).get('logoutRequest');
  assert.match(xml, /<samlp:SessionIndex>\s*ST-[^<]+<\/samlp:SessionIndex>/, 'SessionIndex is the service ticket');
  assert.ok(xml.includes(`>${st}<`), 'the SessionIndex is the ticket of the CAS login');
});

test('an expired id_token_hint is still accepted (RP-Initiated Logout 1.0 §2: SHOULD, even when exp has passed)', async () => {
  const short = await startAll('logout-short-id-token', { oidc: { id_token_ttl: '2s' } });
  try {
    const sconfig = await discover(short.cas, CONFIDENTIAL.client_id, CONFIDENTIAL.client_secret, client.ClientSecretBasic(CONFIDENTIAL.client_secret));
    const browser = new Browser(short.cas);
    const { tokens } = await codeFlow(browser, sconfig, { redirectUri: short.rp.urls.callback, params: { scope: 'openid' } });
    assert.ok(tokens.claims().exp <= tokens.claims().iat + 2, 'id_token_ttl = 2s');
    await sleep(3_500);
    const v = await browser.visit(client.buildEndSessionUrl(sconfig, {
      id_token_hint: tokens.id_token, post_logout_redirect_uri: short.rp.urls.loggedOut, state: 'st-expired',
    }).href);
    assert.equal(v.location, `${short.rp.urls.loggedOut}?state=st-expired`, `redirected with the expired hint:\n${browser.trace()}`);
    assert.equal(browser.cookie('CASTGC'), undefined, 'signed out');
  } finally {
    await short.stop();
  }
});
