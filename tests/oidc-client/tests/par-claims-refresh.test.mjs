// Pushed authorization requests (RFC 9126), the `claims` request parameter
// (OIDC Core §5.5) and ID tokens in refresh responses (a client option), with
// openid-client. Run through tests/oidc-client/run.sh.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as client from 'openid-client';
import {
  Browser, CONFIDENTIAL, ES256, USER, authorize, codeFlow, decodeJwt, describeError, discover, postForm,
} from '../lib/harness.mjs';
import { JWT_ES, PAR_ONLY, REFRESH_IDT, startAdvanced } from '../lib/advanced.mjs';
import { query } from '../lib/checks.mjs';

let env;
let cas;
let rp;

before(async () => {
  env = await startAdvanced('par-claims-refresh');
  ({ cas, rp } = env);
});

after(async () => {
  await env?.stop();
});

const secretClient = (who) => discover(cas, who.client_id, who.client_secret, client.ClientSecretBasic(who.client_secret));

/** A code flow whose authorization request is pushed first. */
async function parFlow(config, redirectUri, params = {}) {
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = await client.buildAuthorizationUrlWithPAR(config, {
    redirect_uri: redirectUri,
    scope: 'openid email',
    state,
    nonce,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    ...params,
  });
  const browser = new Browser(cas);
  const { response } = await authorize(browser, url.href, { redirectUri });
  const tokens = await client.authorizationCodeGrant(config, response, {
    pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce,
  });
  return { url, tokens, browser };
}

// ------------------------------------------------------------------ PAR

test('discovery publishes PAR and the claims parameter', async () => {
  const meta = await (await fetch(`${cas.issuer}/.well-known/openid-configuration`)).json();
  assert.equal(meta.pushed_authorization_request_endpoint, `${cas.issuer}/par`);
  assert.equal(meta.require_pushed_authorization_requests, false, 'not required of every client');
  assert.equal(meta.claims_parameter_supported, true);
});

test('PAR: a pushed request (client_secret_basic) gives a one-time request_uri that signs in', async () => {
  const config = await secretClient(PAR_ONLY);
  const redirectUri = `${rp.origin}/par/callback`;
  let flow;
  try {
    flow = await parFlow(config, redirectUri);
  } catch (e) {
    assert.fail(`PAR flow: ${describeError(e)}\n${cas.log()}`);
  }
  const { url, tokens, browser } = flow;
  assert.match(url.searchParams.get('request_uri'), /^urn:ietf:params:oauth:request_uri:.{22,}$/);
  assert.deepEqual([...url.searchParams.keys()].sort(), ['client_id', 'request_uri'], 'only client_id and request_uri travel');
  assert.equal(tokens.claims().email, USER.attributes.mail);
  // The same request_uri again: refused, and not sent back to the client.
  const again = await browser.visit(url.href);
  assert.equal(again.location, null, 'no redirect for a used request_uri');
  assert.equal(again.final.status, 400, `replayed request_uri: ${again.final.status}`);
});

test('PAR: the answer is 201 with expires_in 60; the pushed request is checked at once', async () => {
  const basic = [PAR_ONLY.client_id, PAR_ONLY.client_secret];
  const ok = await postForm(`${cas.issuer}/par`, {
    response_type: 'code', redirect_uri: `${rp.origin}/par/callback`, scope: 'openid', state: 's',
  }, { basic });
  assert.equal(ok.status, 201, ok.text);
  assert.equal(ok.json.expires_in, 60);
  assert.equal(ok.headers.get('cache-control'), 'no-store');
  const foreign = await postForm(`${cas.issuer}/par`, {
    response_type: 'code', redirect_uri: 'https://evil.example/cb', scope: 'openid',
  }, { basic });
  assert.equal(foreign.status, 400, foreign.text);
  assert.equal(foreign.json.error, 'invalid_request');
  const scope = await postForm(`${cas.issuer}/par`, {
    response_type: 'code', redirect_uri: `${rp.origin}/par/callback`, scope: 'openid admin',
  }, { basic });
  assert.equal(scope.json?.error, 'invalid_scope', scope.text);
  const nested = await postForm(`${cas.issuer}/par`, {
    response_type: 'code', redirect_uri: `${rp.origin}/par/callback`, scope: 'openid', request_uri: 'urn:x',
  }, { basic });
  assert.equal(nested.json?.error, 'invalid_request', nested.text);
  const anonymous = await postForm(`${cas.issuer}/par`, {
    client_id: PAR_ONLY.client_id, response_type: 'code', redirect_uri: `${rp.origin}/par/callback`, scope: 'openid',
  });
  assert.equal(anonymous.status, 401, `no secret: ${anonymous.text}`);
});

test('PAR: a client that must push is refused a plain authorization request', async () => {
  const config = await secretClient(PAR_ONLY);
  const redirectUri = `${rp.origin}/par/callback`;
  const url = client.buildAuthorizationUrl(config, { redirect_uri: redirectUri, scope: 'openid', state: 'st-1' });
  const v = await new Browser(cas).visit(url.href);
  assert.ok(v.location, `refused at the redirect_uri: ${v.final.status}`);
  const q = query(v.location);
  assert.equal(q.error, 'invalid_request', JSON.stringify(q));
  assert.equal(q.state, 'st-1');
  assert.equal(v.loginForms, 0, 'never reached the login');
});

test('PAR: a request_uri is bound to its client; private_key_jwt clients may push', async () => {
  const config = await client.discovery(new URL(cas.issuer), JWT_ES.client_id, undefined,
    client.PrivateKeyJwt({ key: env.keys.es.privateKey, kid: env.keys.es.kid }), { execute: [client.allowInsecureRequests] });
  const url = await client.buildAuthorizationUrlWithPAR(config, {
    redirect_uri: `${rp.origin}/jwt-es/callback`, scope: 'openid', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
    code_challenge_method: 'S256',
  });
  url.searchParams.set('client_id', CONFIDENTIAL.client_id);
  const v = await new Browser(cas).visit(url.href);
  assert.equal(v.location, null, 'never sent to a client');
  assert.equal(v.final.status, 400);
});

// ------------------------------------------------------------------ claims

test('claims: userinfo and id_token members release the claims the client may have, nothing more', async () => {
  const config = await secretClient(CONFIDENTIAL);
  const claims = {
    userinfo: { email: { essential: true }, name: null, secret: { essential: true } },
    id_token: { memberOf: null, email: { essential: true } },
  };
  const { tokens } = await codeFlow(new Browser(cas), config, {
    redirectUri: rp.urls.callback,
    params: { scope: 'openid', claims: JSON.stringify(claims) },
  });
  const id = tokens.claims();
  assert.deepEqual(id.memberOf, USER.attributes.memberOf, 'memberOf in the ID token');
  assert.equal(id.email, USER.attributes.mail, 'email in the ID token');
  assert.equal(id.name, undefined, 'name asked only at userinfo');
  const info = await client.fetchUserInfo(config, tokens.access_token, id.sub);
  assert.equal(info.email, USER.attributes.mail, 'email at userinfo');
  assert.equal(info.name, USER.attributes.cn, 'name at userinfo');
  assert.equal(info.secret, undefined, 'never an attribute that is not released');
  assert.equal(info.memberOf, undefined, 'memberOf asked only in the ID token');
});

test('claims: a claim of a scope the client does not have is not released; a malformed claims is refused', async () => {
  const config = await secretClient(ES256);
  const { tokens } = await codeFlow(new Browser(cas), config, {
    redirectUri: `${rp.origin}/es256/callback`,
    params: { scope: 'openid', claims: JSON.stringify({ id_token: { name: null, email: null } }) },
  });
  assert.equal(tokens.claims().name, undefined, 'profile is not a scope of the client');
  assert.equal(tokens.claims().email, USER.attributes.mail);
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: `${rp.origin}/es256/callback`, scope: 'openid', state: 'st-2', claims: '{"userinfo": [1]}',
  });
  const v = await new Browser(cas).visit(url.href);
  assert.equal(query(v.location).error, 'invalid_request');
});

// ------------------------------------------------------------------ ID token on refresh

test('id_token_on_refresh: the refresh response has an ID token of the same user, client and login', async () => {
  const config = await secretClient(REFRESH_IDT);
  const { tokens } = await codeFlow(new Browser(cas), config, {
    redirectUri: `${rp.origin}/refresh/callback`,
    params: { scope: 'openid email' },
  });
  let refreshed;
  try {
    refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  } catch (e) {
    assert.fail(`refreshTokenGrant: ${describeError(e)}`);
  }
  assert.ok(refreshed.id_token, 'an ID token in the refresh response');
  const [a, b] = [tokens.claims(), refreshed.claims()];
  for (const c of ['iss', 'sub', 'aud', 'auth_time', 'sid']) assert.deepEqual(b[c], a[c], c);
  assert.equal(b.nonce, undefined, 'no nonce');
  assert.equal(b.email, USER.attributes.mail);
  assert.equal(decodeJwt(refreshed.id_token).payload.at_hash !== undefined, true, 'at_hash of the new access token');
  // Other clients keep the old behaviour.
  const plain = await secretClient(CONFIDENTIAL);
  const flow = await codeFlow(new Browser(cas), plain, { redirectUri: rp.urls.callback, params: { scope: 'openid' } });
  const r = await client.refreshTokenGrant(plain, flow.tokens.refresh_token);
  assert.equal(r.id_token, undefined, 'no ID token without the option');
});
