// Authorization code flow with PKCE (S256), state and nonce, with a
// confidential client (client_secret_basic), then the tokens it gives:
// ID token, UserInfo, refresh (rotation, reuse detection), introspection and
// revocation. openid-client is the relying party.
// Run through tests/oidc-client/run.sh.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as client from 'openid-client';
import {
  Browser, CONFIDENTIAL, PAIRWISE, USER, atHash, authorizationRequest, authorize, codeFlow,
  decodeJwt, describeError, discover, parseForm, postForm, rejects, sleep, startAll,
} from '../lib/harness.mjs';
import { assertOAuthError, jwks, now, query, scopes, verifyJwt } from '../lib/checks.mjs';

let env;
let cas;
let rp;
let config;

before(async () => {
  env = await startAll('code-flow');
  ({ cas, rp } = env);
  config = await discover(cas, CONFIDENTIAL.client_id, CONFIDENTIAL.client_secret, client.ClientSecretBasic(CONFIDENTIAL.client_secret));
  // ID tokens from the token endpoint: openid-client checks iss, aud, azp, exp, iat, nonce;
  // with this it also verifies their signature against jwks_uri
  client.enableNonRepudiationChecks(config);
});

after(async () => {
  await env?.stop();
});

const FULL_SCOPE = 'openid profile email memberOf';

/** The code flow of the confidential client; failures carry the redirect trace and castellan's log. */
async function login(browser, params = {}) {
  try {
    return await codeFlow(browser, config, { redirectUri: rp.urls.callback, params: { scope: FULL_SCOPE, ...params } });
  } catch (e) {
    assert.fail(`code flow failed: ${describeError(e)}\n${browser.trace()}\n--- castellan log:\n${cas.log()}`);
  }
  return null;
}

test('code flow: authorize → CAS login form → callback → redirect_uri?code&state&iss; tokens validated by openid-client', async () => {
  const browser = new Browser(cas);
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback, scope: FULL_SCOPE });

  // the hops, one by one
  const { response, hops, loginForms } = await authorize(browser, req.url, { redirectUri: rp.urls.callback });
  const trace = browser.trace();
  assert.equal(hops[0].status, 302, `authorize redirects to the CAS login:\n${trace}`);
  const toLogin = new URL(hops[0].location);
  assert.equal(`${toLogin.origin}${toLogin.pathname}`, `${cas.base}/login`, `authorize → /cas/login:\n${trace}`);
  const service = toLogin.searchParams.get('service') || '';
  assert.ok(service.startsWith(`${cas.issuer}/callback`), `service= is the OIDC callback (${service})`);
  assert.equal(loginForms, 1, `the login form was shown once:\n${trace}`);
  const post = hops.find((h) => h.method === 'POST');
  assert.equal(post.status, 302, `the login POST redirects:\n${trace}`);
  const back = new URL(post.location);
  assert.ok(back.href.startsWith(`${cas.issuer}/callback`), `login → callback:\n${trace}`);
  assert.match(back.searchParams.get('ticket') || '', /^ST-/, 'the callback gets a service ticket');

  const resp = query(response);
  assert.ok(resp.code, `a code in the authorization response: ${response}`);
  assert.equal(resp.state, req.state, 'state is returned unchanged');
  assert.equal(resp.iss, cas.issuer, 'iss in the authorization response (RFC 9207)');
  assert.equal(resp.error, undefined);

  assert.ok(browser.cookie('CASTGC'), 'an SSO session cookie');
  assert.equal(browser.cookie('CASTGC').path, '/cas', 'CASTGC path /cas');

  let tokens;
  try {
    tokens = await client.authorizationCodeGrant(config, response, {
      pkceCodeVerifier: req.codeVerifier,
      expectedState: req.state,
      expectedNonce: req.nonce,
      idTokenExpected: true,
    });
  } catch (e) {
    assert.fail(`authorizationCodeGrant: ${describeError(e)}\n--- castellan log:\n${cas.log()}`);
  }

  assert.equal(String(tokens.token_type).toLowerCase(), 'bearer', 'token_type');
  assert.ok(tokens.access_token, 'access_token');
  assert.ok(tokens.id_token, 'id_token');
  assert.ok(tokens.refresh_token, 'refresh_token (code + refresh_token grant types)');
  assert.ok(Number.isInteger(tokens.expires_in) && tokens.expires_in > 0 && tokens.expires_in <= 300,
    `expires_in within access_token_ttl = 5m: ${tokens.expires_in}`);
  assert.deepEqual(scopes(tokens.scope), scopes(FULL_SCOPE), 'scope granted as asked');

  // the ID token: claims (openid-client already checked iss, aud, azp, exp, iat, nonce and the signature)
  const c = tokens.claims();
  const t = now();
  assert.equal(c.iss, cas.issuer, 'iss');
  assert.equal(c.sub, USER.username, 'sub = username (subject public)');
  assert.ok(c.aud === CONFIDENTIAL.client_id || (Array.isArray(c.aud) && c.aud.includes(CONFIDENTIAL.client_id)), `aud ${JSON.stringify(c.aud)}`);
  assert.equal(c.azp, CONFIDENTIAL.client_id, 'azp');
  assert.equal(c.nonce, req.nonce, 'nonce');
  assert.ok(Math.abs(c.iat - t) <= 60, `iat is now (${c.iat} vs ${t})`);
  assert.ok(c.exp > t && c.exp <= c.iat + 300, `exp within id_token_ttl = 5m (iat ${c.iat}, exp ${c.exp})`);
  assert.ok(Number.isInteger(c.auth_time) && c.auth_time <= c.iat + 1 && c.auth_time >= t - 60, `auth_time ${c.auth_time}`);
  assert.equal(typeof c.acr, 'string', `acr ${JSON.stringify(c.acr)}`);
  assert.ok(typeof c.sid === 'string' && c.sid.length > 0, `sid ${JSON.stringify(c.sid)}`);
  // scope claims
  assert.equal(c.email, USER.attributes.mail, 'email (scope email, from mail)');
  assert.equal(typeof c.email_verified, 'boolean', `email_verified ${JSON.stringify(c.email_verified)}`);
  assert.equal(c.name, USER.attributes.cn, 'name (scope profile, from cn)');
  assert.equal(c.preferred_username, USER.username, 'preferred_username (scope profile)');
  assert.deepEqual([].concat(c.memberOf).sort(), [...USER.attributes.memberOf].sort(), 'memberOf (custom scope memberOf)');
  assert.equal(c.secret, undefined, 'an attribute not in release is never a claim');
  assert.equal(c.given_name, undefined, 'no given_name: the user has no givenName');

  // the ID token by hand: header, signature, at_hash
  const { header } = decodeJwt(tokens.id_token);
  assert.equal(header.alg, 'RS256', 'ID token alg RS256 by default');
  assert.ok(header.kid, 'kid in the ID token header');
  const { set } = await jwks(cas);
  assert.ok(set.keys.some((k) => k.kid === header.kid), `the kid ${header.kid} is in the JWKS`);
  await verifyJwt(cas, tokens.id_token, { issuer: cas.issuer, audience: CONFIDENTIAL.client_id, algorithms: ['RS256'] }, 'the ID token');
  assert.equal(c.at_hash, await atHash(tokens.access_token, header.alg), 'at_hash is the hash of the access token');
});

test('access token: an RFC 9068 JWT (typ at+jwt) signed with the JWKS keys', async () => {
  const { tokens } = await login(new Browser(cas));
  const { payload: at, protectedHeader } = await verifyJwt(cas, tokens.access_token, { issuer: cas.issuer, typ: 'at+jwt' }, 'the access token');
  assert.match(protectedHeader.typ, /^(application\/)?at\+jwt$/i, 'typ at+jwt');
  assert.ok(protectedHeader.kid, 'kid');
  assert.equal(at.sub, USER.username, 'sub');
  assert.equal(at.client_id, CONFIDENTIAL.client_id, 'client_id');
  assert.ok(at.aud !== undefined && at.aud !== '', `aud ${JSON.stringify(at.aud)}`);
  assert.ok(typeof at.jti === 'string' && at.jti.length > 0, 'jti');
  assert.ok(Number.isInteger(at.iat) && Number.isInteger(at.exp) && at.exp > now() && at.exp <= at.iat + 300, `iat ${at.iat} exp ${at.exp}`);
  assert.deepEqual(scopes(at.scope), scopes(FULL_SCOPE), 'scope claim');
  const other = await login(new Browser(cas));
  assert.notEqual(decodeJwt(other.tokens.access_token).payload.jti, at.jti, 'jti differs between tokens');
});

test('SSO: a second authorization request with the CASTGC cookie gets a code without the form; same sid and auth_time', async () => {
  const browser = new Browser(cas);
  const first = await login(browser);
  assert.equal(first.loginForms, 1);
  const second = await login(browser);
  assert.equal(second.loginForms, 0, `no login form with an SSO session:\n${second.hops.map((h) => `${h.method} ${h.url} ${h.status}`).join('\n')}`);
  const [a, b] = [first.tokens.claims(), second.tokens.claims()];
  assert.equal(b.sub, a.sub);
  assert.equal(b.sid, a.sid, 'the same SSO session, the same sid');
  assert.equal(b.auth_time, a.auth_time, 'auth_time is the time of the login, not of the second request');
  assert.notEqual(second.tokens.access_token, first.tokens.access_token);

  // a new browser is a new session: another sid
  const other = await login(new Browser(cas));
  assert.notEqual(other.tokens.claims().sid, a.sid, 'another session, another sid');
});

test('SSO: a session opened at a CAS service is used by the OpenID Provider (no form)', async () => {
  const browser = new Browser(cas);
  const v = await browser.visit(`${cas.base}/login?service=${encodeURIComponent(rp.urls.casApp)}`, { login: USER });
  assert.match(new URL(v.location || 'http://x/').searchParams.get('ticket') || '', /^ST-/, `CAS login:\n${browser.trace()}`);
  const { tokens, loginForms } = await login(browser);
  assert.equal(loginForms, 0, 'no login form');
  assert.equal(tokens.claims().sub, USER.username);
});

test('prompt=login: the form is shown again (renew=true) despite the SSO session', async () => {
  const browser = new Browser(cas);
  await login(browser);
  const again = await login(browser, { prompt: 'login' });
  const toLogin = new URL(again.hops[0].location);
  assert.equal(`${toLogin.origin}${toLogin.pathname}`, `${cas.base}/login`);
  assert.equal(toLogin.searchParams.get('renew'), 'true', `renew=true on the login URL: ${toLogin}`);
  assert.equal(again.loginForms, 1, 'the login form is shown');
});

test('prompt=none with an SSO session: a code without any form', async () => {
  const browser = new Browser(cas);
  const first = await login(browser);
  const silent = await login(browser, { prompt: 'none' });
  assert.equal(silent.loginForms, 0);
  assert.equal(silent.tokens.claims().sid, first.tokens.claims().sid);
});

test('max_age: within it no form (auth_time checked by openid-client); older than it, the form again (OIDC Core §3.1.2.1)', async () => {
  const browser = new Browser(cas);
  const first = await login(browser);
  const within = await login(browser, { max_age: '3600' });
  assert.equal(within.loginForms, 0, 'no form: the authentication is younger than max_age');
  assert.equal(within.tokens.claims().auth_time, first.tokens.claims().auth_time, 'auth_time of the existing authentication');

  await sleep(2_200);
  const older = await login(browser, { max_age: '1' });
  assert.equal(older.loginForms, 1, 'the login form: the authentication is older than max_age');
  assert.ok(older.tokens.claims().auth_time >= first.tokens.claims().auth_time + 2, 'auth_time of the new authentication');
});

test('max_age=0 is prompt=login: the form even right after a login (OIDC Core §3.1.2.1)', async () => {
  // "Note that max_age=0 is equivalent to prompt=login" (OIDC Core 1.0 errata set 2; Connect WG issue #993).
  // Both requests within the same second, so that an "elapsed > max_age" check in whole seconds
  // cannot pass by chance.
  while (Date.now() % 1000 > 150) await sleep(20);
  const browser = new Browser(cas);
  await login(browser);
  const zero = await login(browser, { max_age: '0' });
  assert.equal(zero.loginForms, 1, `max_age=0 shows the login form:\n${zero.hops.map((h) => `${h.method} ${h.url} -> ${h.status}`).join('\n')}`);
});

test('response_mode=form_post: an auto-submitting form POSTs code and state to the redirect_uri', async () => {
  const browser = new Browser(cas);
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback, scope: 'openid email', response_mode: 'form_post' });
  const v = await browser.visit(req.url, { login: USER });
  assert.equal(v.location, null, `no redirect to the relying party with form_post:\n${browser.trace()}`);
  assert.equal(v.final.status, 200, `a 200 page:\n${browser.trace()}`);
  assert.match(v.final.headers.get('content-type') || '', /^text\/html\b/);
  const forms = [...v.final.body.matchAll(/<form\b[^>]*>/gi)];
  assert.equal(forms.length, 1, `one form on the page: ${v.final.body.slice(0, 600)}`);
  const form = parseForm(v.final.body, v.final.url);
  assert.equal(form.action, rp.urls.callback, 'the form posts to the redirect_uri');
  assert.equal(form.method, 'POST');
  assert.ok(form.fields.code, 'a code field');
  assert.equal(form.fields.state, req.state, 'the state field');
  assert.equal(new URL(v.final.url).searchParams.get('code'), null, 'no code in the page URL');

  // the relying party receives the POST: openid-client reads the form body of the Request
  const request = new Request(form.action, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form.fields).toString(),
  });
  let tokens;
  try {
    tokens = await client.authorizationCodeGrant(config, request, {
      pkceCodeVerifier: req.codeVerifier, expectedState: req.state, expectedNonce: req.nonce, idTokenExpected: true,
    });
  } catch (e) {
    assert.fail(`authorizationCodeGrant (form_post): ${describeError(e)}`);
  }
  assert.equal(tokens.claims().sub, USER.username);
  assert.equal(tokens.claims().email, USER.attributes.mail);
});

test('state round-trips byte for byte (query and form_post), and form_post escapes it into the page', async () => {
  const weird = 'a&b=c d+é/?#%"><script>alert(1)</script>';
  const browser = new Browser(cas);
  const { response, tokens } = await login(browser, { state: weird });
  assert.equal(response.searchParams.get('state'), weird, 'state in the query');
  assert.equal(tokens.claims().sub, USER.username);

  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback, state: weird, response_mode: 'form_post' });
  const v = await browser.visit(req.url);
  assert.equal(v.final.status, 200, browser.trace());
  assert.ok(!v.final.body.includes('<script>alert(1)'), 'the state is HTML-escaped in the form_post page');
  assert.equal(parseForm(v.final.body, v.final.url).fields.state, weird, 'state in the form, after HTML decoding');
});

test('scope openid only: no profile, email or custom claims in the ID token or at UserInfo', async () => {
  const { tokens } = await login(new Browser(cas), { scope: 'openid' });
  const c = tokens.claims();
  for (const k of ['email', 'email_verified', 'name', 'preferred_username', 'memberOf', 'secret']) {
    assert.equal(c[k], undefined, `no ${k} in the ID token for scope=openid`);
  }
  const info = await client.fetchUserInfo(config, tokens.access_token, USER.username);
  for (const k of ['email', 'name', 'preferred_username', 'memberOf', 'secret']) {
    assert.equal(info[k], undefined, `no ${k} at UserInfo for scope=openid`);
  }
});

test('OAuth 2.0 without openid: an access token, no ID token', async () => {
  const browser = new Browser(cas);
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback, scope: 'email', nonce: undefined });
  const { response } = await authorize(browser, req.url, { redirectUri: rp.urls.callback });
  const tokens = await client.authorizationCodeGrant(config, response, { pkceCodeVerifier: req.codeVerifier, expectedState: req.state });
  assert.ok(tokens.access_token);
  assert.equal(tokens.id_token, undefined, 'no id_token without the openid scope');
  assert.deepEqual(scopes(tokens.scope), ['email']);
});

// ------------------------------------------------------------------ UserInfo

test('userinfo: fetchUserInfo returns sub and the claims of the granted scopes', async () => {
  const { tokens } = await login(new Browser(cas));
  const sub = tokens.claims().sub;
  let info;
  try {
    info = await client.fetchUserInfo(config, tokens.access_token, sub);
  } catch (e) {
    assert.fail(`fetchUserInfo: ${describeError(e)}`);
  }
  assert.equal(info.sub, USER.username, 'sub');
  assert.equal(info.email, USER.attributes.mail, 'email');
  assert.equal(typeof info.email_verified, 'boolean', 'email_verified');
  assert.equal(info.name, USER.attributes.cn, 'name');
  assert.equal(info.preferred_username, USER.username, 'preferred_username');
  assert.deepEqual([].concat(info.memberOf).sort(), [...USER.attributes.memberOf].sort(), 'memberOf');
  assert.equal(info.secret, undefined, 'secret is never released');

  // openid-client compares sub with the expected subject (OIDC Core §5.3.2)
  const e = await rejects(() => client.fetchUserInfo(config, tokens.access_token, 'somebody-else'), 'fetchUserInfo with another expected sub');
  assert.match(describeError(e), /sub/i);

  // POST with the Bearer header works too
  const r = await fetch(`${cas.issuer}/userinfo`, { method: 'POST', headers: { Authorization: `Bearer ${tokens.access_token}` } });
  assert.equal(r.status, 200, 'POST /oidc/userinfo');
  assert.match(r.headers.get('content-type') || '', /^application\/json\b/);
  assert.equal((await r.json()).sub, USER.username);
});

test('userinfo: a tampered, unknown or missing token gets 401 with WWW-Authenticate: Bearer', async () => {
  const { tokens } = await login(new Browser(cas));
  const [h, p, s] = tokens.access_token.split('.');
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
  payload.sub = 'admin';
  const tampered = [h, Buffer.from(JSON.stringify(payload)).toString('base64url'), s].join('.');
  for (const [what, token] of [['tampered', tampered], ['garbage', 'not-a-token'], ['bad signature', `${h}.${p}.${s.slice(0, -4)}AAAA`]]) {
    const r = await fetch(`${cas.issuer}/userinfo`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(r.status, 401, `${what} token: 401`);
    const www = r.headers.get('www-authenticate') || '';
    assert.match(www, /^Bearer\b/i, `${what}: WWW-Authenticate Bearer (${www})`);
    assert.match(www, /error="invalid_token"/, `${what}: error="invalid_token" (${www})`);
    const e = await rejects(() => client.fetchUserInfo(config, token, client.skipSubjectCheck), `fetchUserInfo with a ${what} token`);
    assert.ok(e instanceof client.WWWAuthenticateChallengeError, `openid-client sees the challenge: ${describeError(e)}`);
    assert.equal(e.cause?.[0]?.parameters?.error, 'invalid_token');
  }
  const none = await fetch(`${cas.issuer}/userinfo`);
  assert.equal(none.status, 401, 'no token: 401');
  assert.match(none.headers.get('www-authenticate') || '', /^Bearer\b/i, 'no token: WWW-Authenticate Bearer');
});

// ------------------------------------------------------------------ refresh

test('refresh: new tokens, the refresh token rotates; reusing the old one is invalid_grant and revokes the grant', async () => {
  const { tokens } = await login(new Browser(cas));
  const rt0 = tokens.refresh_token;
  assert.ok(rt0, 'a refresh token');

  let t1;
  try {
    t1 = await client.refreshTokenGrant(config, rt0);
  } catch (e) {
    assert.fail(`refreshTokenGrant: ${describeError(e)}`);
  }
  assert.ok(t1.access_token, 'a new access token');
  assert.notEqual(t1.access_token, tokens.access_token, 'a different access token');
  assert.ok(t1.refresh_token, 'a new refresh token (rotation)');
  assert.notEqual(t1.refresh_token, rt0, 'the refresh token rotated');
  assert.equal(String(t1.token_type).toLowerCase(), 'bearer');
  assert.deepEqual(scopes(t1.scope ?? tokens.scope), scopes(FULL_SCOPE), 'the same scope');
  if (t1.id_token) {
    // OIDC Core §12.2
    const [a, b] = [tokens.claims(), t1.claims()];
    assert.equal(b.iss, a.iss, 'refreshed ID token: same iss');
    assert.equal(b.sub, a.sub, 'refreshed ID token: same sub');
    assert.deepEqual(b.aud, a.aud, 'refreshed ID token: same aud');
    assert.equal(b.auth_time, a.auth_time, 'refreshed ID token: auth_time of the original authentication');
    await verifyJwt(cas, t1.id_token, { issuer: cas.issuer, audience: CONFIDENTIAL.client_id }, 'the refreshed ID token');
  }
  const info = await client.fetchUserInfo(config, t1.access_token, USER.username);
  assert.equal(info.email, USER.attributes.mail, 'the new access token works at UserInfo');

  // reuse of the rotated refresh token
  const reuse = await rejects(() => client.refreshTokenGrant(config, rt0), 'reusing the rotated refresh token');
  assertOAuthError(reuse, 'invalid_grant', 400, 'reused refresh token');

  // ...revoked the whole grant: the newest refresh token fails too
  const newest = await rejects(() => client.refreshTokenGrant(config, t1.refresh_token), 'the newest refresh token after a reuse');
  assertOAuthError(newest, 'invalid_grant', 400, 'newest refresh token after the reuse');
});

test('refresh: a narrower scope is granted; a wider one is invalid_scope (RFC 6749 §6)', async () => {
  const { tokens } = await login(new Browser(cas));
  const narrow = await client.refreshTokenGrant(config, tokens.refresh_token, { scope: 'openid email' });
  assert.deepEqual(scopes(narrow.scope), ['email', 'openid'], 'the narrower scope');
  assert.deepEqual(scopes(decodeJwt(narrow.access_token).payload.scope), ['email', 'openid'], 'the access token has the narrower scope');
  const info = await client.fetchUserInfo(config, narrow.access_token, USER.username);
  assert.equal(info.email, USER.attributes.mail);
  assert.equal(info.name, undefined, 'no profile claims with the narrower scope');

  // offline_access is allowed for the client but was not granted in this grant
  const wide = await rejects(() => client.refreshTokenGrant(config, narrow.refresh_token, { scope: 'openid email offline_access' }),
    'refresh with a scope never granted');
  assertOAuthError(wide, 'invalid_scope', 400, 'refresh asking for more');
});

test('refresh: a refresh token of another client, or a made-up one, is invalid_grant', async () => {
  const made = await rejects(() => client.refreshTokenGrant(config, 'made-up-refresh-token'), 'made-up refresh token');
  assertOAuthError(made, 'invalid_grant', 400, 'made-up refresh token');

  const pconfig = await discover(cas, PAIRWISE.client_id, PAIRWISE.client_secret, client.ClientSecretBasic(PAIRWISE.client_secret));
  const { tokens } = await codeFlow(new Browser(cas), pconfig, { redirectUri: rp.urls.pairwiseCallback, params: { scope: 'openid email' } });
  assert.ok(tokens.refresh_token, 'the other client has a refresh token');
  const foreign = await rejects(() => client.refreshTokenGrant(config, tokens.refresh_token), "another client's refresh token");
  assertOAuthError(foreign, 'invalid_grant', 400, "another client's refresh token");
});

// ------------------------------------------------------------------ introspection and revocation

test('introspection: active for a fresh access token; inactive after revocation (and UserInfo refuses it)', async () => {
  const { tokens } = await login(new Browser(cas));
  let i1;
  try {
    i1 = await client.tokenIntrospection(config, tokens.access_token);
  } catch (e) {
    assert.fail(`tokenIntrospection: ${describeError(e)}`);
  }
  assert.equal(i1.active, true, `active: ${JSON.stringify(i1)}`);
  assert.equal(i1.sub, USER.username, 'sub');
  assert.equal(i1.client_id, CONFIDENTIAL.client_id, 'client_id');
  assert.deepEqual(scopes(i1.scope), scopes(FULL_SCOPE), 'scope');
  assert.ok(Number.isInteger(i1.exp) && i1.exp > now(), `exp ${i1.exp}`);
  assert.ok(Number.isInteger(i1.iat) && i1.iat <= now() + 5, `iat ${i1.iat}`);
  assert.equal(typeof i1.token_type, 'string', `token_type ${JSON.stringify(i1.token_type)}`);
  if (i1.iss !== undefined) assert.equal(i1.iss, cas.issuer, 'iss');

  try {
    await client.tokenRevocation(config, tokens.access_token, { token_type_hint: 'access_token' });
  } catch (e) {
    assert.fail(`tokenRevocation: ${describeError(e)}`);
  }
  const i2 = await client.tokenIntrospection(config, tokens.access_token);
  assert.equal(i2.active, false, `inactive after revocation: ${JSON.stringify(i2)}`);
  assert.equal(i2.sub, undefined, 'nothing about an inactive token (RFC 7662 §2.2)');

  const r = await fetch(`${cas.issuer}/userinfo`, { headers: { Authorization: `Bearer ${tokens.access_token}` } });
  assert.equal(r.status, 401, 'UserInfo refuses a revoked access token');
  assert.match(r.headers.get('www-authenticate') || '', /error="invalid_token"/);
});

test('revocation of a refresh token revokes its grant: refresh fails, the refresh token is inactive', async () => {
  const { tokens } = await login(new Browser(cas));
  const ri = await client.tokenIntrospection(config, tokens.refresh_token, { token_type_hint: 'refresh_token' });
  assert.equal(ri.active, true, `a refresh token is active at introspection: ${JSON.stringify(ri)}`);

  await client.tokenRevocation(config, tokens.refresh_token, { token_type_hint: 'refresh_token' });
  const e = await rejects(() => client.refreshTokenGrant(config, tokens.refresh_token), 'refresh with a revoked refresh token');
  assertOAuthError(e, 'invalid_grant', 400, 'revoked refresh token');
  const ri2 = await client.tokenIntrospection(config, tokens.refresh_token, { token_type_hint: 'refresh_token' });
  assert.equal(ri2.active, false, 'the revoked refresh token is inactive');
  // RFC 7009 §2.1: revoking a refresh token SHOULD also invalidate the access tokens of the same grant;
  // the contract says "revokes its grant"
  const ai = await client.tokenIntrospection(config, tokens.access_token);
  assert.equal(ai.active, false, `the access token of the revoked grant is inactive: ${JSON.stringify(ai)}`);
});

test('revocation and introspection: an unknown token is 200 / active:false; no client authentication is 401', async () => {
  await client.tokenRevocation(config, 'no-such-token'); // RFC 7009 §2.2: 200 for invalid tokens
  const i = await client.tokenIntrospection(config, 'no-such-token');
  assert.deepEqual(i.active, false);

  const { tokens } = await login(new Browser(cas));
  const anon = await postForm(`${cas.issuer}/introspect`, { token: tokens.access_token });
  assert.equal(anon.status, 401, `introspection without client authentication: ${anon.status} ${anon.text}`);
  assert.equal(anon.json?.error, 'invalid_client');
  const wrong = await postForm(`${cas.issuer}/introspect`, { token: tokens.access_token }, { basic: [CONFIDENTIAL.client_id, 'wrong'] });
  assert.equal(wrong.status, 401, `introspection with a wrong secret: ${wrong.status} ${wrong.text}`);
  assert.equal(wrong.json?.active, undefined, 'nothing about the token to an unauthenticated caller');
  const revokeAnon = await postForm(`${cas.issuer}/revoke`, { token: tokens.access_token });
  assert.equal(revokeAnon.status, 401, `revocation without client authentication: ${revokeAnon.status} ${revokeAnon.text}`);
  const still = await client.tokenIntrospection(config, tokens.access_token);
  assert.equal(still.active, true, 'an unauthenticated revocation did nothing');
});

// ------------------------------------------------------------------ subjects

test('pairwise subject: not the username, stable across logins, the same at UserInfo', async () => {
  const pconfig = await discover(cas, PAIRWISE.client_id, PAIRWISE.client_secret, client.ClientSecretBasic(PAIRWISE.client_secret));
  const flow = async (browser) => {
    try {
      return await codeFlow(browser, pconfig, { redirectUri: rp.urls.pairwiseCallback, params: { scope: 'openid email' } });
    } catch (e) {
      assert.fail(`pairwise code flow: ${describeError(e)}\n${browser.trace()}`);
    }
    return null;
  };
  const a = (await flow(new Browser(cas))).tokens;
  const b = (await flow(new Browser(cas))).tokens;
  const sub = a.claims().sub;
  assert.ok(sub && sub !== USER.username, `a pairwise sub, not the username: ${sub}`);
  assert.equal(b.claims().sub, sub, 'the same pairwise sub on the next login');
  const info = await client.fetchUserInfo(pconfig, a.access_token, sub);
  assert.equal(info.sub, sub, 'UserInfo sub = ID token sub (OIDC Core §5.3.2)');
  assert.equal(info.email, USER.attributes.mail);
});
