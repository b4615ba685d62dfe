// Refusals: authorization requests that must not redirect, error responses
// to the redirect_uri, and token requests that must fail (code replay, PKCE
// or redirect_uri mismatch, another client's code, bad client credentials),
// plus expiry of codes and access tokens (short TTLs on a castellan of its own).
// Run through tests/oidc-client/run.sh.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as client from 'openid-client';
import {
  Browser, CONFIDENTIAL, MACHINE, PAIRWISE, authorizationRequest, authorize, codeFlow, describeError, discover, postForm,
  rejects, sleep, startAll,
} from '../lib/harness.mjs';
import { assertOAuthError, query } from '../lib/checks.mjs';

let env;
let cas;
let rp;
let config;

before(async () => {
  env = await startAll('errors');
  ({ cas, rp } = env);
  config = await discover(cas, CONFIDENTIAL.client_id, CONFIDENTIAL.client_secret, client.ClientSecretBasic(CONFIDENTIAL.client_secret));
});

after(async () => {
  await env?.stop();
});

const authorizeUrl = (params) => `${cas.issuer}/authorize?${new URLSearchParams({
  response_type: 'code', scope: 'openid', state: 'st-1', nonce: 'n-1', code_challenge_method: 'S256',
  code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGgSKWpQ-c', // any valid-looking S256 challenge
  ...params,
})}`;

/** One GET without following anything: status, Location, body. */
async function getOnce(url) {
  const r = await fetch(url, { redirect: 'manual' });
  return { status: r.status, location: r.headers.get('location'), type: r.headers.get('content-type') || '', body: await r.text() };
}

// ------------------------------------------------------------------ authorization endpoint

test('authorize: an unknown client_id is a 400 error page, no redirect', async () => {
  const hits = rp.requests.length;
  const r = await getOnce(authorizeUrl({ client_id: 'no-such-client', redirect_uri: rp.urls.callback }));
  assert.equal(r.status, 400, `unknown client: ${r.status} ${r.location || ''}`);
  assert.equal(r.location, null, 'no Location');
  assert.match(r.type, /^text\/html\b/, 'an HTML error page');
  assert.equal(rp.requests.length, hits, 'nothing reached the relying party');
});

test('authorize: a redirect_uri not registered (exact match) is a 400 error page, no redirect', async () => {
  const variants = [
    `${rp.origin}/evil`,
    `${rp.urls.callback}/extra`,
    `${rp.urls.callback}?x=1`,
    `${rp.urls.callback}/`,
    rp.urls.callback.replace('127.0.0.1', 'localhost'),
    `https://evil.example.org/callback`,
  ];
  for (const redirect_uri of variants) {
    const r = await getOnce(authorizeUrl({ client_id: CONFIDENTIAL.client_id, redirect_uri }));
    assert.equal(r.status, 400, `redirect_uri ${redirect_uri}: ${r.status} ${r.location || ''}`);
    assert.equal(r.location, null, `redirect_uri ${redirect_uri}: no Location`);
  }
  // and with an SSO session, the same
  const browser = new Browser(cas);
  await codeFlow(browser, config, { redirectUri: rp.urls.callback });
  const r = await browser.request(authorizeUrl({ client_id: CONFIDENTIAL.client_id, redirect_uri: `${rp.origin}/evil` }));
  assert.equal(r.status, 400, 'with an SSO session');
  assert.equal(r.location, null);
});

test('authorize: a scope the client may not have is invalid_scope at the redirect_uri, with state', async () => {
  const browser = new Browser(cas);
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback, scope: 'openid secret' });
  const { response } = await authorize(browser, req.url, { redirectUri: rp.urls.callback });
  const q = query(response);
  assert.equal(q.error, 'invalid_scope', `error=invalid_scope: ${response}`);
  assert.equal(q.state, req.state);
  assert.equal(q.code, undefined);
});

test('authorize: response_type=token is unsupported_response_type at the redirect_uri', async () => {
  const browser = new Browser(cas);
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback, response_type: 'token' });
  assert.equal(req.url.searchParams.get('response_type'), 'token');
  const { response } = await authorize(browser, req.url, { redirectUri: rp.urls.callback });
  // RFC 6749 §4.2.2.1 would put it in the fragment for response_type=token; the query is accepted too
  const params = new URLSearchParams(response.search || response.hash.slice(1));
  if (!params.get('error') && response.hash) for (const [k, v] of new URLSearchParams(response.hash.slice(1))) params.set(k, v);
  assert.equal(params.get('error'), 'unsupported_response_type', `error=unsupported_response_type: ${response}`);
  assert.equal(params.get('state'), req.state);
  assert.equal(params.get('access_token'), null, 'no token');
});

test('authorize: a confidential client with code_challenge_method=plain is invalid_request', async () => {
  const browser = new Browser(cas);
  const v = client.randomPKCECodeVerifier();
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback, code_challenge: v, code_challenge_method: 'plain' }, { pkce: false });
  const { response } = await authorize(browser, req.url, { redirectUri: rp.urls.callback });
  assert.equal(query(response).error, 'invalid_request', `plain refused: ${response}`);
});

// ------------------------------------------------------------------ token endpoint

test('code replay: invalid_grant, and the tokens of the first redemption are revoked', async () => {
  const browser = new Browser(cas);
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback, scope: 'openid email' });
  const { response } = await authorize(browser, req.url, { redirectUri: rp.urls.callback });
  const checks = { pkceCodeVerifier: req.codeVerifier, expectedState: req.state, expectedNonce: req.nonce };
  const first = await client.authorizationCodeGrant(config, response, checks);
  assert.ok(first.access_token && first.refresh_token);
  assert.equal((await client.tokenIntrospection(config, first.access_token)).active, true, 'active before the replay');

  const e = await rejects(() => client.authorizationCodeGrant(config, response, checks), 'redeeming the code twice');
  assertOAuthError(e, 'invalid_grant', 400, 'code replay');

  const i = await client.tokenIntrospection(config, first.access_token);
  assert.equal(i.active, false, `the first access token is inactive after the replay: ${JSON.stringify(i)}`);
  const u = await fetch(`${cas.issuer}/userinfo`, { headers: { Authorization: `Bearer ${first.access_token}` } });
  assert.equal(u.status, 401, 'UserInfo refuses the first access token after the replay');
  const r = await rejects(() => client.refreshTokenGrant(config, first.refresh_token), 'the first refresh token after the replay');
  assertOAuthError(r, 'invalid_grant', 400, 'refresh token of a replayed code');
});

test('token: redirect_uri different from the authorization request is invalid_grant', async () => {
  const browser = new Browser(cas);
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback });
  const { response } = await authorize(browser, req.url, { redirectUri: rp.urls.callback });
  // openid-client sends redirect_uri = the URL it is given without its query: another path
  const elsewhere = new URL(response);
  elsewhere.pathname = '/other-callback';
  const e = await rejects(() => client.authorizationCodeGrant(config, elsewhere, {
    pkceCodeVerifier: req.codeVerifier, expectedState: req.state, expectedNonce: req.nonce,
  }), 'redirect_uri mismatch');
  assertOAuthError(e, 'invalid_grant', 400, 'redirect_uri mismatch');
});

test('token: a wrong code_verifier is invalid_grant (confidential client too)', async () => {
  const browser = new Browser(cas);
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback });
  const { response } = await authorize(browser, req.url, { redirectUri: rp.urls.callback });
  const e = await rejects(() => client.authorizationCodeGrant(config, response, {
    pkceCodeVerifier: client.randomPKCECodeVerifier(), expectedState: req.state, expectedNonce: req.nonce,
  }), 'PKCE mismatch');
  assertOAuthError(e, 'invalid_grant', 400, 'PKCE mismatch');
});

test('PKCE: a code asked for with a code_challenge needs its code_verifier; a code_verifier without code_challenge is refused (RFC 9700 §2.1.1)', async () => {
  const basic = [CONFIDENTIAL.client_id, CONFIDENTIAL.client_secret];
  const browser = new Browser(cas);
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback });
  const { response } = await authorize(browser, req.url, { redirectUri: rp.urls.callback });
  const none = await postForm(`${cas.issuer}/token`, {
    grant_type: 'authorization_code', code: response.searchParams.get('code'), redirect_uri: rp.urls.callback,
  }, { basic });
  assert.equal(none.status, 400, `code_challenge sent, no code_verifier: ${none.status} ${none.text}`);
  assert.ok(['invalid_grant', 'invalid_request'].includes(none.json?.error), none.text);

  // PKCE downgrade: no code_challenge at the authorization endpoint, a code_verifier at the token endpoint
  const req2 = await authorizationRequest(config, { redirect_uri: rp.urls.callback }, { pkce: false });
  const { response: r2 } = await authorize(browser, req2.url, { redirectUri: rp.urls.callback });
  const down = await postForm(`${cas.issuer}/token`, {
    grant_type: 'authorization_code', code: r2.searchParams.get('code'), redirect_uri: rp.urls.callback,
    code_verifier: client.randomPKCECodeVerifier(),
  }, { basic });
  assert.equal(down.status, 400, `code_verifier without code_challenge: ${down.status} ${down.text}`);
  assert.ok(['invalid_grant', 'invalid_request'].includes(down.json?.error), down.text);
});

test('token: redirect_uri left out of the token request is refused (it was in the authorization request; RFC 6749 §4.1.3)', async () => {
  const browser = new Browser(cas);
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback });
  const { response } = await authorize(browser, req.url, { redirectUri: rp.urls.callback });
  const r = await postForm(`${cas.issuer}/token`, {
    grant_type: 'authorization_code', code: response.searchParams.get('code'), code_verifier: req.codeVerifier,
  }, { basic: [CONFIDENTIAL.client_id, CONFIDENTIAL.client_secret] });
  assert.equal(r.status, 400, `no redirect_uri: ${r.status} ${r.text}`);
  assert.ok(['invalid_grant', 'invalid_request'].includes(r.json?.error), r.text);
});

test('revocation by another client revokes nothing (RFC 7009 §2.1)', async () => {
  const { tokens } = await codeFlow(new Browser(cas), config, { redirectUri: rp.urls.callback });
  const machine = await discover(cas, MACHINE.client_id, MACHINE.client_secret, client.ClientSecretBasic(MACHINE.client_secret));
  for (const [what, token] of [['access token', tokens.access_token], ['refresh token', tokens.refresh_token]]) {
    await client.tokenRevocation(machine, token).catch(() => { /* refusing with an error is right too */ });
    const i = await client.tokenIntrospection(config, token);
    assert.equal(i.active, true, `the ${what} is still active after another client tried to revoke it`);
  }
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  assert.ok(refreshed.access_token, 'the grant still works');
});

test('userinfo: an access token not issued for openid is refused (OIDC Core §5.3, RFC 6750 §3.1)', async () => {
  const machine = await discover(cas, MACHINE.client_id, MACHINE.client_secret, client.ClientSecretBasic(MACHINE.client_secret));
  const cc = await client.clientCredentialsGrant(machine);
  const browser = new Browser(cas);
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback, scope: 'email', nonce: undefined });
  const { response } = await authorize(browser, req.url, { redirectUri: rp.urls.callback });
  const oauthOnly = await client.authorizationCodeGrant(config, response, { pkceCodeVerifier: req.codeVerifier, expectedState: req.state });
  for (const [what, token] of [['client_credentials', cc.access_token], ['scope email without openid', oauthOnly.access_token]]) {
    const r = await fetch(`${cas.issuer}/userinfo`, { headers: { Authorization: `Bearer ${token}` } });
    assert.ok(r.status === 403 || r.status === 401, `${what}: refused (${r.status} ${await r.text()})`);
    assert.match(r.headers.get('www-authenticate') || '', /^Bearer\b.*error="(insufficient_scope|invalid_token)"/i,
      `${what}: WWW-Authenticate ${r.headers.get('www-authenticate')}`);
  }
});

test('token: the code of another client is invalid_grant', async () => {
  const browser = new Browser(cas);
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback });
  const { response } = await authorize(browser, req.url, { redirectUri: rp.urls.callback });
  const other = await discover(cas, PAIRWISE.client_id, PAIRWISE.client_secret, client.ClientSecretBasic(PAIRWISE.client_secret));
  const e = await rejects(() => client.authorizationCodeGrant(other, response, {
    pkceCodeVerifier: req.codeVerifier, expectedState: req.state, expectedNonce: req.nonce,
  }), "another client's code");
  assertOAuthError(e, 'invalid_grant', 400, "another client's code");
});

test('token: a wrong client secret is 401 invalid_client with WWW-Authenticate', async () => {
  const browser = new Browser(cas);
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback });
  const { response } = await authorize(browser, req.url, { redirectUri: rp.urls.callback });
  const form = {
    grant_type: 'authorization_code', code: response.searchParams.get('code'),
    redirect_uri: rp.urls.callback, code_verifier: req.codeVerifier,
  };
  const r = await postForm(`${cas.issuer}/token`, form, { basic: [CONFIDENTIAL.client_id, 'wrong-secret'] });
  assert.equal(r.status, 401, `wrong secret: ${r.status} ${r.text}`);
  assert.equal(r.json?.error, 'invalid_client');
  assert.match(r.headers.get('www-authenticate') || '', /^Basic\b/i, 'WWW-Authenticate: Basic (client_secret_basic was used; RFC 6749 §5.2)');
  assert.equal(r.json?.access_token, undefined);
});

test('token: a successful raw token response is JSON with Cache-Control: no-store (RFC 6749 §5.1)', async () => {
  const browser = new Browser(cas);
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback });
  const { response } = await authorize(browser, req.url, { redirectUri: rp.urls.callback });
  // client_secret_post this time
  const ok = await postForm(`${cas.issuer}/token`, {
    grant_type: 'authorization_code', code: response.searchParams.get('code'), redirect_uri: rp.urls.callback,
    code_verifier: req.codeVerifier, client_id: CONFIDENTIAL.client_id, client_secret: CONFIDENTIAL.client_secret,
  });
  assert.equal(ok.status, 200, `token request with client_secret_post: ${ok.status} ${ok.text}`);
  assert.match(ok.headers.get('content-type') || '', /^application\/json\b/);
  assert.match(ok.headers.get('cache-control') || '', /no-store/, 'Cache-Control: no-store');
  assert.equal(String(ok.json.token_type).toLowerCase(), 'bearer');
  for (const k of ['access_token', 'id_token', 'refresh_token', 'expires_in', 'scope']) {
    assert.ok(ok.json[k] !== undefined, `${k} in the token response`);
  }
});

test('token: unknown grant_type is unsupported_grant_type; a made-up code is invalid_grant', async () => {
  const basic = [CONFIDENTIAL.client_id, CONFIDENTIAL.client_secret];
  const g = await postForm(`${cas.issuer}/token`, { grant_type: 'password', username: 'casuser', password: 'Mellon' }, { basic });
  assert.equal(g.status, 400, `grant_type=password: ${g.status} ${g.text}`);
  assert.equal(g.json?.error, 'unsupported_grant_type', g.text);
  const c = await postForm(`${cas.issuer}/token`, { grant_type: 'authorization_code', code: 'made-up', redirect_uri: rp.urls.callback, code_verifier: client.randomPKCECodeVerifier() }, { basic });
  assert.equal(c.status, 400, `made-up code: ${c.status} ${c.text}`);
  assert.equal(c.json?.error, 'invalid_grant');
  assert.match(c.headers.get('content-type') || '', /^application\/json\b/);
});

// ------------------------------------------------------------------ expiry (own castellan, short TTLs)

test('expiry: an expired code is invalid_grant; an expired access token is inactive and refused at UserInfo', async () => {
  const short = await startAll('errors-short-ttl', { oidc: { code_ttl: '2s', access_token_ttl: '2s' } });
  try {
    const sconfig = await discover(short.cas, CONFIDENTIAL.client_id, CONFIDENTIAL.client_secret, client.ClientSecretBasic(CONFIDENTIAL.client_secret));
    const browser = new Browser(short.cas);
    const req = await authorizationRequest(sconfig, { redirect_uri: short.rp.urls.callback });
    const { response } = await authorize(browser, req.url, { redirectUri: short.rp.urls.callback });
    await sleep(3_500);
    const e = await rejects(() => client.authorizationCodeGrant(sconfig, response, {
      pkceCodeVerifier: req.codeVerifier, expectedState: req.state, expectedNonce: req.nonce,
    }), 'a code older than code_ttl');
    assertOAuthError(e, 'invalid_grant', 400, 'expired code');

    const { tokens } = await codeFlow(browser, sconfig, { redirectUri: short.rp.urls.callback });
    assert.ok(tokens.expires_in <= 2, `expires_in follows access_token_ttl = 2s: ${tokens.expires_in}`);
    assert.equal((await client.tokenIntrospection(sconfig, tokens.access_token)).active, true);
    await sleep(3_500);
    const i = await client.tokenIntrospection(sconfig, tokens.access_token);
    assert.equal(i.active, false, `expired access token inactive: ${JSON.stringify(i)}`);
    const u = await fetch(`${short.cas.issuer}/userinfo`, { headers: { Authorization: `Bearer ${tokens.access_token}` } });
    assert.equal(u.status, 401, 'UserInfo refuses an expired access token');
    assert.match(u.headers.get('www-authenticate') || '', /error="invalid_token"/);
    // the refresh token still works and gives a fresh access token
    const t2 = await client.refreshTokenGrant(sconfig, tokens.refresh_token);
    assert.equal((await client.tokenIntrospection(sconfig, t2.access_token)).active, true, 'refresh after access token expiry');
  } catch (e) {
    if (e?.code === 'ERR_ASSERTION') throw e;
    assert.fail(`${describeError(e)}\n--- castellan log:\n${short.cas.log()}`);
  } finally {
    await short.stop();
  }
});
