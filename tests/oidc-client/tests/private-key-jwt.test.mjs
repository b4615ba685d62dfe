// private_key_jwt client authentication (RFC 7523, OIDC Core §9) with
// openid-client: RS256 keys registered inline, ES256 keys at a jwks_uri served
// by the test; replayed, mis-addressed, foreign and expired assertions are
// refused. Run through tests/oidc-client/run.sh.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as client from 'openid-client';
import {
  Browser, USER, codeFlow, decodeJwt, describeError, postForm, sleep,
} from '../lib/harness.mjs';
import {
  JWT_BEARER, JWT_ES, JWT_RS, assertion, keyPair, startAdvanced,
} from '../lib/advanced.mjs';

let env;
let cas;
let rp;

before(async () => {
  env = await startAdvanced('private-key-jwt');
  ({ cas, rp } = env);
});

after(async () => {
  await env?.stop();
});

function discoverJwt(who, key) {
  return client.discovery(new URL(cas.issuer), who.client_id, undefined,
    client.PrivateKeyJwt({ key: key.privateKey, kid: key.kid }), {
      execute: [client.allowInsecureRequests],
      timeout: 10,
    });
}

const token = (form) => postForm(`${cas.issuer}/token`, form);

test('discovery publishes private_key_jwt and its algorithms', async () => {
  const meta = await (await fetch(`${cas.issuer}/.well-known/openid-configuration`)).json();
  assert.ok(meta.token_endpoint_auth_methods_supported.includes('private_key_jwt'), JSON.stringify(meta.token_endpoint_auth_methods_supported));
  for (const alg of ['RS256', 'ES256']) {
    assert.ok(meta.token_endpoint_auth_signing_alg_values_supported.includes(alg), `${alg} published`);
  }
  assert.ok(!meta.token_endpoint_auth_signing_alg_values_supported.some((a) => a.startsWith('HS') || a === 'none'));
});

test('RS256, inline jwks: client_credentials, then introspection and revocation with the same method', async () => {
  const config = await discoverJwt(JWT_RS, env.keys.rs);
  let tokens;
  try {
    tokens = await client.clientCredentialsGrant(config, { scope: 'api' });
  } catch (e) {
    assert.fail(`clientCredentialsGrant: ${describeError(e)}\n${cas.log()}`);
  }
  assert.equal(decodeJwt(tokens.access_token).payload.client_id, JWT_RS.client_id);
  const info = await client.tokenIntrospection(config, tokens.access_token);
  assert.equal(info.active, true, JSON.stringify(info));
  await client.tokenRevocation(config, tokens.access_token);
  const after = await client.tokenIntrospection(config, tokens.access_token);
  assert.equal(after.active, false, 'revoked');
});

test('ES256, jwks_uri: the code flow authenticates with an assertion; the key set is fetched once and cached', async () => {
  const config = await discoverJwt(JWT_ES, env.keys.es);
  const hitsBefore = env.jwks.hits;
  const { tokens } = await codeFlow(new Browser(cas), config, {
    redirectUri: `${rp.origin}/jwt-es/callback`,
    params: { scope: 'openid email' },
  });
  assert.equal(tokens.claims().email, USER.attributes.mail);
  await client.clientCredentialsGrant(config, { scope: 'api' });
  await client.clientCredentialsGrant(config, { scope: 'api' });
  assert.equal(env.jwks.hits - hitsBefore <= 1, true, `fetched ${env.jwks.hits - hitsBefore} times`);
});

test('a replayed assertion is refused (one-time jti)', async () => {
  const a = await assertion(env.keys.rs, JWT_RS.client_id, `${cas.issuer}/token`);
  const form = { grant_type: 'client_credentials', client_assertion_type: JWT_BEARER, client_assertion: a };
  const first = await token(form);
  assert.equal(first.status, 200, `first use: ${first.text}`);
  const again = await token(form);
  assert.equal(again.status, 401, `replay: ${again.text}`);
  assert.equal(again.json?.error, 'invalid_client');
});

test('aud: the issuer and the token endpoint are accepted, another audience is refused', async () => {
  for (const aud of [cas.issuer, `${cas.issuer}/token`]) {
    const a = await assertion(env.keys.es, JWT_ES.client_id, aud);
    const r = await token({ grant_type: 'client_credentials', client_assertion_type: JWT_BEARER, client_assertion: a });
    assert.equal(r.status, 200, `aud ${aud}: ${r.text}`);
  }
  const wrong = await assertion(env.keys.es, JWT_ES.client_id, 'https://other.example/oidc/token');
  const r = await token({ grant_type: 'client_credentials', client_assertion_type: JWT_BEARER, client_assertion: wrong });
  assert.equal(r.status, 401, `wrong aud: ${r.text}`);
  assert.equal(r.json?.error, 'invalid_client');
});

test('a stranger\'s key, another client\'s key, a long lifetime, a secret beside it: all refused', async () => {
  const stranger = await keyPair('ES256', JWT_ES.kid);
  const aud = `${cas.issuer}/token`;
  const cases = {
    'signed by an unregistered key under the registered kid': await assertion(stranger, JWT_ES.client_id, aud),
    'the RS client\'s key for the ES client': await assertion(env.keys.rs, JWT_ES.client_id, aud),
    'exp an hour ahead': await assertion(env.keys.rs, JWT_RS.client_id, aud, { exp: Math.floor(Date.now() / 1000) + 3600 }),
    'expired': await assertion(env.keys.rs, JWT_RS.client_id, aud, { exp: Math.floor(Date.now() / 1000) - 120 }),
  };
  for (const [what, a] of Object.entries(cases)) {
    const r = await token({ grant_type: 'client_credentials', client_assertion_type: JWT_BEARER, client_assertion: a });
    assert.equal(r.status, 401, `${what}: ${r.status} ${r.text}`);
    assert.equal(r.json?.error, 'invalid_client', what);
  }
  const a = await assertion(env.keys.rs, JWT_RS.client_id, aud);
  const both = await token({
    grant_type: 'client_credentials', client_assertion_type: JWT_BEARER, client_assertion: a, client_secret: 'x',
  });
  assert.equal(both.json?.error, 'invalid_client', `two methods: ${both.text}`);
  // A private_key_jwt client cannot pass as a public client by naming itself.
  const bare = await token({ grant_type: 'client_credentials', client_id: JWT_RS.client_id });
  assert.equal(bare.json?.error, 'invalid_client', `client_id alone: ${bare.text}`);
});

test('jwks_uri: a rotated key (unknown kid) makes castellan fetch the set again', async () => {
  const rotated = await keyPair('ES256', 'es-2');
  env.jwks.keys = [env.keys.es.jwk, rotated.jwk];
  // An unknown kid refetches at most every 2 s.
  await sleep(2100);
  const hitsBefore = env.jwks.hits;
  const a = await assertion(rotated, JWT_ES.client_id, `${cas.issuer}/token`);
  const r = await token({ grant_type: 'client_credentials', client_assertion_type: JWT_BEARER, client_assertion: a });
  assert.equal(r.status, 200, `the new key: ${r.text}\n${cas.log()}`);
  assert.equal(env.jwks.hits, hitsBefore + 1, 'one more fetch');
  // Made-up kids do not make it fetch again right away.
  for (let i = 0; i < 3; i += 1) {
    const unknown = await keyPair('ES256', `made-up-${i}`);
    const u = await assertion(unknown, JWT_ES.client_id, `${cas.issuer}/token`);
    const x = await token({ grant_type: 'client_credentials', client_assertion_type: JWT_BEARER, client_assertion: u });
    assert.equal(x.status, 401);
  }
  assert.equal(env.jwks.hits, hitsBefore + 1, 'no fetch storm');
});
