// The client credentials grant (RFC 6749 §4.4) with openid-client, and which
// clients may use it. Run through tests/oidc-client/run.sh.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as client from 'openid-client';
import {
  Browser, CONFIDENTIAL, MACHINE, PUBLIC, authorizationRequest, authorize, decodeJwt, describeError, discover,
  postForm, rejects, startAll,
} from '../lib/harness.mjs';
import { assertOAuthError, now, scopes, verifyJwt } from '../lib/checks.mjs';

let env;
let cas;
let rp;
let machine;

before(async () => {
  env = await startAll('client-credentials');
  ({ cas, rp } = env);
  // client_secret_post here (the code-flow tests use client_secret_basic)
  machine = await discover(cas, MACHINE.client_id, MACHINE.client_secret, client.ClientSecretPost(MACHINE.client_secret));
});

after(async () => {
  await env?.stop();
});

test('client_credentials: an access token for the client itself, no ID token, no refresh token', async () => {
  let tokens;
  try {
    tokens = await client.clientCredentialsGrant(machine);
  } catch (e) {
    assert.fail(`clientCredentialsGrant: ${describeError(e)}\n${cas.log()}`);
  }
  assert.ok(tokens.access_token, 'access_token');
  assert.equal(String(tokens.token_type).toLowerCase(), 'bearer', 'token_type');
  assert.ok(Number.isInteger(tokens.expires_in) && tokens.expires_in > 0 && tokens.expires_in <= 300, `expires_in ${tokens.expires_in}`);
  assert.equal(tokens.id_token, undefined, 'no ID token: no user');
  assert.equal(tokens.refresh_token, undefined, 'no refresh token (RFC 6749 §4.4.3: SHOULD NOT)');

  const { payload, protectedHeader } = await verifyJwt(cas, tokens.access_token, { issuer: cas.issuer, typ: 'at+jwt' }, 'the access token');
  assert.match(protectedHeader.typ, /^(application\/)?at\+jwt$/i);
  assert.equal(payload.client_id, MACHINE.client_id, 'client_id');
  // RFC 9068 §2.2: without a resource owner, sub identifies the client
  assert.equal(payload.sub, MACHINE.client_id, 'sub is the client');
  assert.ok(payload.jti && payload.exp > now(), 'jti, exp');

  const info = await client.tokenIntrospection(machine, tokens.access_token);
  assert.equal(info.active, true, `active at introspection: ${JSON.stringify(info)}`);
  assert.equal(info.client_id, MACHINE.client_id);
});

test('client_credentials: a permitted scope is granted, another is invalid_scope', async () => {
  const tokens = await client.clientCredentialsGrant(machine, { scope: 'api' });
  assert.deepEqual(scopes(tokens.scope), ['api'], 'scope api');
  assert.deepEqual(scopes(decodeJwt(tokens.access_token).payload.scope), ['api'], 'scope claim');

  const e = await rejects(() => client.clientCredentialsGrant(machine, { scope: 'admin' }), 'a scope the client may not have');
  assertOAuthError(e, 'invalid_scope', 400);
});

test('client_credentials: also with client_secret_basic; a wrong secret is 401 invalid_client with WWW-Authenticate', async () => {
  const basic = await discover(cas, MACHINE.client_id, MACHINE.client_secret, client.ClientSecretBasic(MACHINE.client_secret));
  const tokens = await client.clientCredentialsGrant(basic);
  assert.ok(tokens.access_token, 'client_secret_basic works');

  const r = await postForm(`${cas.issuer}/token`, { grant_type: 'client_credentials' }, { basic: [MACHINE.client_id, 'wrong-secret'] });
  assert.equal(r.status, 401, `wrong secret (basic): ${r.status} ${r.text}`);
  assert.equal(r.json?.error, 'invalid_client', 'error invalid_client');
  assert.ok(r.headers.get('www-authenticate'), 'WWW-Authenticate on 401 (RFC 6749 §5.2)');

  const p = await postForm(`${cas.issuer}/token`, { grant_type: 'client_credentials', client_id: MACHINE.client_id, client_secret: 'wrong' });
  assert.ok(p.status === 401 || p.status === 400, `wrong secret (post): ${p.status} ${p.text}`);
  assert.equal(p.json?.error, 'invalid_client', 'error invalid_client (client_secret_post)');

  const u = await postForm(`${cas.issuer}/token`, { grant_type: 'client_credentials' }, { basic: ['no-such-client', 'x'] });
  assert.equal(u.status, 401, `unknown client: ${u.status} ${u.text}`);
  assert.equal(u.json?.error, 'invalid_client');
});

test('client_credentials: refused to a client without that grant type (unauthorized_client) and to a public client', async () => {
  const conf = await discover(cas, CONFIDENTIAL.client_id, CONFIDENTIAL.client_secret, client.ClientSecretBasic(CONFIDENTIAL.client_secret));
  const e = await rejects(() => client.clientCredentialsGrant(conf), 'client_credentials for a client registered with code + refresh only');
  assertOAuthError(e, 'unauthorized_client', 400, 'grant_types without client_credentials');

  // RFC 6749 §4.4: the client credentials grant MUST only be used by confidential clients
  const pub = await discover(cas, PUBLIC.client_id, undefined, client.None());
  const e2 = await rejects(() => client.clientCredentialsGrant(pub), 'client_credentials for a public client');
  assert.ok(e2 instanceof client.ResponseBodyError || e2 instanceof client.WWWAuthenticateChallengeError,
    `an OAuth error: ${describeError(e2)}`);
  if (e2 instanceof client.ResponseBodyError) {
    assert.ok(['unauthorized_client', 'invalid_client'].includes(e2.error), `unauthorized_client or invalid_client: ${describeError(e2)}`);
  }
});

test('a client registered for client_credentials only gets no tokens through the authorization endpoint', async () => {
  const browser = new Browser(cas);
  const redirectUri = `${rp.origin}/machine/unused`;
  const req = await authorizationRequest(machine, { redirect_uri: redirectUri, scope: 'api', nonce: undefined });
  const { response } = await authorize(browser, req.url, { redirectUri });
  const q = Object.fromEntries(response.searchParams);
  if (q.error !== undefined) {
    // RFC 6749 §4.1.2.1
    assert.equal(q.error, 'unauthorized_client', `error redirect: ${response}`);
    assert.equal(q.state, req.state);
    assert.equal(q.code, undefined);
    return;
  }
  // or a code that the token endpoint refuses to exchange
  assert.ok(q.code, `a code or an error: ${response}`);
  const e = await rejects(() => client.authorizationCodeGrant(machine, response, { pkceCodeVerifier: req.codeVerifier, expectedState: req.state }),
    'authorization_code grant for a client_credentials-only client');
  assertOAuthError(e, 'unauthorized_client', 400, 'authorization_code for a client without that grant type');
});
