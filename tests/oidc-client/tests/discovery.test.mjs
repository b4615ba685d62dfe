// Discovery (OpenID Connect Discovery 1.0, RFC 8414) and the JWKS, as seen by
// openid-client. Run through tests/oidc-client/run.sh.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as client from 'openid-client';
import { Browser, CONFIDENTIAL, ES256, codeFlow, decodeJwt, describeError, discover, startAll } from '../lib/harness.mjs';

let env;
let cas;

before(async () => {
  env = await startAll('discovery');
  ({ cas } = env);
});

after(async () => {
  await env?.stop();
});

test('discovery: openid-client discovers the issuer; the metadata is the contract', async () => {
  let config;
  try {
    config = await discover(cas, CONFIDENTIAL.client_id, CONFIDENTIAL.client_secret, client.ClientSecretBasic(CONFIDENTIAL.client_secret));
  } catch (e) {
    assert.fail(`client.discovery(${cas.issuer}) failed: ${describeError(e)}\n${cas.log()}`);
  }
  const md = config.serverMetadata();
  const b = cas.base;

  // openid-client already compared `issuer` with the URL it was given; again, explicitly
  assert.equal(md.issuer, `${b}/oidc`, 'issuer');
  assert.equal(md.authorization_endpoint, `${b}/oidc/authorize`, 'authorization_endpoint');
  assert.equal(md.token_endpoint, `${b}/oidc/token`, 'token_endpoint');
  assert.equal(md.userinfo_endpoint, `${b}/oidc/userinfo`, 'userinfo_endpoint');
  assert.equal(md.jwks_uri, `${b}/oidc/jwks`, 'jwks_uri');
  assert.equal(md.introspection_endpoint, `${b}/oidc/introspect`, 'introspection_endpoint');
  assert.equal(md.revocation_endpoint, `${b}/oidc/revoke`, 'revocation_endpoint');
  assert.equal(md.end_session_endpoint, `${b}/oidc/logout`, 'end_session_endpoint');
  assert.equal(md.backchannel_logout_supported, true, 'backchannel_logout_supported');
  assert.deepEqual(md.code_challenge_methods_supported, ['S256'], 'code_challenge_methods_supported: S256 only (plain refused)');

  // REQUIRED by OpenID Connect Discovery 1.0 §3
  assert.deepEqual(md.response_types_supported, ['code'], 'response_types_supported: code only');
  assert.ok(Array.isArray(md.subject_types_supported) && md.subject_types_supported.includes('public'),
    `subject_types_supported (REQUIRED) includes public: ${JSON.stringify(md.subject_types_supported)}`);
  assert.ok(md.subject_types_supported.includes('pairwise'),
    `subject_types_supported includes pairwise (a client is configured with subject = "pairwise"): ${JSON.stringify(md.subject_types_supported)}`);
  for (const alg of ['RS256', 'ES256']) {
    assert.ok(md.id_token_signing_alg_values_supported?.includes(alg),
      `id_token_signing_alg_values_supported includes ${alg}: ${JSON.stringify(md.id_token_signing_alg_values_supported)}`);
  }

  for (const mode of ['query', 'form_post']) {
    assert.ok(md.response_modes_supported?.includes(mode),
      `response_modes_supported includes ${mode}: ${JSON.stringify(md.response_modes_supported)}`);
  }
  for (const m of ['client_secret_basic', 'client_secret_post']) {
    assert.ok(md.token_endpoint_auth_methods_supported?.includes(m),
      `token_endpoint_auth_methods_supported includes ${m}: ${JSON.stringify(md.token_endpoint_auth_methods_supported)}`);
  }
  if (md.grant_types_supported !== undefined) {
    for (const g of ['authorization_code', 'refresh_token', 'client_credentials']) {
      assert.ok(md.grant_types_supported.includes(g), `grant_types_supported includes ${g}: ${JSON.stringify(md.grant_types_supported)}`);
    }
  }
  if (md.scopes_supported !== undefined) {
    assert.ok(md.scopes_supported.includes('openid'), `scopes_supported includes openid (Discovery §3): ${JSON.stringify(md.scopes_supported)}`);
  }
  if (md.introspection_endpoint_auth_methods_supported !== undefined) {
    assert.ok(md.introspection_endpoint_auth_methods_supported.includes('client_secret_basic'));
  }
});

test('discovery: the document is JSON at {issuer}/.well-known/openid-configuration', async () => {
  const r = await fetch(`${cas.issuer}/.well-known/openid-configuration`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') || '', /^application\/json\b/, 'Content-Type application/json');
  const md = await r.json();
  assert.equal(md.issuer, cas.issuer);
  // the endpoints are on the issuer's origin, under public_url
  for (const k of ['authorization_endpoint', 'token_endpoint', 'userinfo_endpoint', 'jwks_uri', 'end_session_endpoint']) {
    assert.ok(String(md[k]).startsWith(`${cas.base}/`), `${k} under public_url: ${md[k]}`);
  }
});

test('JWKS: public signing keys only, an RS256 key (the default) and a P-256 key (ES256 is advertised)', async () => {
  const r = await fetch(`${cas.issuer}/jwks`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') || '', /^application\/(jwk-set\+)?json\b/, 'Content-Type');
  const { keys } = await r.json();
  assert.ok(Array.isArray(keys) && keys.length > 0, 'keys');
  const kids = new Set();
  for (const k of keys) {
    assert.ok(k.kid, `every key has a kid: ${JSON.stringify(k)}`);
    assert.ok(!kids.has(k.kid), `kid ${k.kid} is unique`);
    kids.add(k.kid);
    for (const priv of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) {
      assert.equal(k[priv], undefined, `no private member ${priv} in a published key (kid ${k.kid})`);
    }
    if (k.use !== undefined) assert.equal(k.use, 'sig', `use is sig (kid ${k.kid})`);
  }
  assert.ok(keys.some((k) => k.kty === 'RSA' && (k.alg === undefined || k.alg === 'RS256') && k.n && k.e), 'an RSA key for RS256');
  assert.ok(keys.some((k) => k.kty === 'EC' && k.crv === 'P-256' && (k.alg === undefined || k.alg === 'ES256') && k.x && k.y),
    'a P-256 key for ES256 (advertised in id_token_signing_alg_values_supported)');
  const rsa = keys.find((k) => k.kty === 'RSA');
  assert.ok(Buffer.from(rsa.n, 'base64url').length >= 256, 'RSA modulus of at least 2048 bits');
});

test('RFC 9207: the iss parameter that authorization responses carry is advertised', async () => {
  // The contract puts iss=<issuer> in every authorization response; without
  // authorization_response_iss_parameter_supported = true a client cannot tell
  // that a response without iss is a forgery (RFC 9207 §2.4, §3).
  const md = await (await fetch(`${cas.issuer}/.well-known/openid-configuration`)).json();
  assert.equal(md.authorization_response_iss_parameter_supported, true, 'authorization_response_iss_parameter_supported');
});

test('ES256 ID tokens for a client registered for them, verified by openid-client', async () => {
  const config = await discover(cas, ES256.client_id, ES256.client_secret, client.ClientSecretBasic(ES256.client_secret));
  client.enableNonRepudiationChecks(config);
  const redirectUri = `${env.rp.origin}/es256/callback`;
  const { tokens } = await codeFlow(new Browser(cas), config, { redirectUri, params: { scope: 'openid email' } });
  const idHeader = decodeJwt(tokens.id_token).header;
  assert.equal(idHeader.alg, 'ES256', 'the ID token is ES256 as registered');
  const atHeader = decodeJwt(tokens.access_token).header;
  assert.equal(atHeader.alg, 'RS256', 'the access token is RS256 as registered');
  assert.equal(atHeader.typ, 'at+jwt');
  assert.equal(tokens.claims().email, 'casuser@example.org');
});
