// A public client (no secret, token_endpoint_auth_method none): PKCE S256 is
// required. Run through tests/oidc-client/run.sh.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as client from 'openid-client';
import {
  Browser, PUBLIC, USER, authorizationRequest, authorize, codeFlow, describeError, discover, postForm, rejects, startAll,
} from '../lib/harness.mjs';
import { assertOAuthError, query, verifyJwt } from '../lib/checks.mjs';

let env;
let cas;
let rp;
let config;

before(async () => {
  env = await startAll('public-client');
  ({ cas, rp } = env);
  config = await discover(cas, PUBLIC.client_id, { token_endpoint_auth_method: 'none' }, client.None());
});

after(async () => {
  await env?.stop();
});

test('public client: code flow with PKCE S256 and no client secret', async () => {
  const browser = new Browser(cas);
  let flow;
  try {
    flow = await codeFlow(browser, config, { redirectUri: rp.urls.publicCallback, params: { scope: 'openid profile email' } });
  } catch (e) {
    assert.fail(`public code flow: ${describeError(e)}\n${browser.trace()}\n--- castellan log:\n${cas.log()}`);
  }
  const { tokens } = flow;
  const c = tokens.claims();
  assert.equal(c.sub, USER.username);
  assert.equal(c.aud === PUBLIC.client_id || (Array.isArray(c.aud) && c.aud.includes(PUBLIC.client_id)), true, `aud ${JSON.stringify(c.aud)}`);
  assert.equal(c.azp, PUBLIC.client_id, 'azp');
  assert.equal(c.email, USER.attributes.mail);
  assert.equal(c.name, USER.attributes.cn);
  assert.equal(c.memberOf, undefined, 'memberOf is not released to this client');
  await verifyJwt(cas, tokens.id_token, { issuer: cas.issuer, audience: PUBLIC.client_id }, 'the ID token');
  const info = await client.fetchUserInfo(config, tokens.access_token, USER.username);
  assert.equal(info.email, USER.attributes.mail);
});

test('public client: refresh with client_id only (rotation applies)', async () => {
  const { tokens } = await codeFlow(new Browser(cas), config, { redirectUri: rp.urls.publicCallback, params: { scope: 'openid' } });
  assert.ok(tokens.refresh_token, 'a refresh token (default grant types: code + refresh)');
  const t1 = await client.refreshTokenGrant(config, tokens.refresh_token);
  assert.ok(t1.access_token);
  assert.notEqual(t1.refresh_token, tokens.refresh_token, 'rotated');
});

test('public client: without code_challenge the authorization request is invalid_request (redirected, with state)', async () => {
  const browser = new Browser(cas);
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.publicCallback }, { pkce: false });
  assert.equal(req.url.searchParams.get('code_challenge'), null);
  const { response } = await authorize(browser, req.url, { redirectUri: rp.urls.publicCallback });
  const q = query(response);
  assert.equal(q.error, 'invalid_request', `error=invalid_request: ${response}\n${browser.trace()}`);
  assert.equal(q.state, req.state, 'state with the error');
  assert.equal(q.code, undefined, 'no code');
  const e = await rejects(() => client.authorizationCodeGrant(config, response, { expectedState: req.state }), 'the error response');
  assert.ok(e instanceof client.AuthorizationResponseError && e.error === 'invalid_request', describeError(e));
});

test('public client: code_challenge_method=plain is invalid_request', async () => {
  const browser = new Browser(cas);
  const verifier = client.randomPKCECodeVerifier();
  const req = await authorizationRequest(config, {
    redirect_uri: rp.urls.publicCallback, code_challenge: verifier, code_challenge_method: 'plain',
  }, { pkce: false });
  const { response } = await authorize(browser, req.url, { redirectUri: rp.urls.publicCallback });
  const q = query(response);
  assert.equal(q.error, 'invalid_request', `error=invalid_request for plain: ${response}`);
  assert.equal(q.state, req.state);
  assert.equal(q.code, undefined);
});

test('public client: a wrong code_verifier (or none) at the token endpoint is invalid_grant', async () => {
  const browser = new Browser(cas);
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.publicCallback });
  const { response } = await authorize(browser, req.url, { redirectUri: rp.urls.publicCallback });
  const e = await rejects(() => client.authorizationCodeGrant(config, response, {
    pkceCodeVerifier: client.randomPKCECodeVerifier(), expectedState: req.state, expectedNonce: req.nonce,
  }), 'a wrong code_verifier');
  assertOAuthError(e, 'invalid_grant', 400, 'PKCE mismatch');

  const req2 = await authorizationRequest(config, { redirect_uri: rp.urls.publicCallback });
  const { response: r2 } = await authorize(browser, req2.url, { redirectUri: rp.urls.publicCallback });
  const raw = await postForm(`${cas.issuer}/token`, {
    grant_type: 'authorization_code', code: r2.searchParams.get('code'), redirect_uri: rp.urls.publicCallback, client_id: PUBLIC.client_id,
  });
  assert.equal(raw.status, 400, `no code_verifier: ${raw.status} ${raw.text}`);
  assert.ok(['invalid_grant', 'invalid_request'].includes(raw.json?.error), `invalid_grant or invalid_request: ${raw.text}`);
});

test('token request without any client identification is invalid_client', async () => {
  const raw = await postForm(`${cas.issuer}/token`, { grant_type: 'authorization_code', code: 'x', redirect_uri: rp.urls.publicCallback });
  assert.ok(raw.status === 401 || raw.status === 400, `no client identification: ${raw.status} ${raw.text}`);
  assert.equal(raw.json?.error, 'invalid_client', `invalid_client without client_id: ${raw.text}`);
});
