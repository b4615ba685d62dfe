// DPoP (RFC 9449) with openid-client's DPoP support: bound access and
// refresh tokens, a replayed proof, a wrong htu, a server nonce challenge,
// and a client that must use DPoP. Run through tests/oidc-client/run.sh.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import * as client from 'openid-client';
import * as jose from 'jose';
import {
  Browser, MACHINE, PUBLIC, authorizationRequest, authorize, configText, decodeJwt, describeError, discover,
  distinctPorts, postForm, rejects, startCastellan, startRp, tomlList, tomlString,
} from '../lib/harness.mjs';
import { assertOAuthError, now } from '../lib/checks.mjs';

const BOUND = { client_id: 'rp-dpop-bound', client_secret: 'dpop-bound-secret-9d1e' };
const NONCE_SECRET = 'castellan-dpop-nonce-secret-0123456789abcdef';

/** The harness's clients plus one that must use DPoP. */
const withBoundClient = (args) => `${configText(args)}
[[services]]
name = "DPoP-bound machine"
protocol = "oidc"
client_id = ${tomlString(BOUND.client_id)}
client_secret = ${tomlString(BOUND.client_secret)}
redirect_uris = ${tomlList([`${args.rpOrigin}/bound/unused`])}
scopes = ["api"]
grant_types = ["client_credentials"]
dpop_bound_access_tokens = true
`;

async function start(name, oidc = {}) {
  const [port, rpPort] = await distinctPorts(2);
  const rp = await startRp({ port: rpPort });
  let cas;
  try {
    cas = await startCastellan({ port, rpOrigin: rp.origin, name, config: withBoundClient, oidc });
  } catch (e) {
    await rp.stop();
    throw e;
  }
  return { cas, rp, async stop() { await cas.stop(); await rp.stop(); } };
}

/** A DPoP proof made by hand (for what openid-client would never send). */
async function proof(keyPair, { htm = 'POST', htu, iat = now(), jti = crypto.randomUUID(), extra = {} }) {
  const jwk = await jose.exportJWK(keyPair.publicKey);
  return new jose.SignJWT({ htm, htu, iat, jti, ...extra })
    .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk })
    .sign(keyPair.privateKey);
}

const machineForm = (c) => ({ grant_type: 'client_credentials', client_id: c.client_id, client_secret: c.client_secret });

let env;
let nonceEnv;

before(async () => {
  env = await start('dpop');
  nonceEnv = await start('dpop-nonce', { dpop_nonce_secret: NONCE_SECRET });
});

after(async () => {
  await env?.stop();
  await nonceEnv?.stop();
});

test('dpop: discovery publishes the proof algorithms', async () => {
  const meta = await (await fetch(`${env.cas.issuer}/.well-known/openid-configuration`)).json();
  assert.deepEqual(meta.dpop_signing_alg_values_supported, ['ES256', 'RS256', 'PS256', 'EdDSA']);
});

test('dpop: a public client gets key-bound tokens; userinfo wants the proof, refresh wants the key', async () => {
  const { cas, rp } = env;
  const config = await discover(cas, PUBLIC.client_id, { token_endpoint_auth_method: 'none' }, client.None());
  const keyPair = await client.randomDPoPKeyPair('ES256');
  const DPoP = client.getDPoPHandle(config, keyPair);
  const browser = new Browser(cas);
  const req = await authorizationRequest(config, {
    redirect_uri: rp.urls.publicCallback, scope: 'openid email',
  });
  const { response } = await authorize(browser, req.url, { redirectUri: rp.urls.publicCallback });
  let tokens;
  try {
    tokens = await client.authorizationCodeGrant(config, response, {
      pkceCodeVerifier: req.codeVerifier, expectedState: req.state, expectedNonce: req.nonce,
    }, undefined, { DPoP });
  } catch (e) {
    assert.fail(`DPoP code grant: ${describeError(e)}\n${cas.log()}`);
  }
  assert.equal(tokens.token_type.toLowerCase(), 'dpop', 'token_type DPoP');
  const jkt = await jose.calculateJwkThumbprint(await jose.exportJWK(keyPair.publicKey));
  assert.deepEqual(decodeJwt(tokens.access_token).payload.cnf, { jkt }, 'cnf.jkt is the key thumbprint');

  const info = await client.fetchUserInfo(config, tokens.access_token, client.skipSubjectCheck, { DPoP });
  assert.equal(info.email, 'casuser@example.org');

  // The same token as a bearer token: refused.
  const bearer = await fetch(`${cas.issuer}/userinfo`, { headers: { Authorization: `Bearer ${tokens.access_token}` } });
  assert.equal(bearer.status, 401, 'a bound token is no bearer token');
  // With a proof of another key: refused, with a DPoP challenge.
  const other = await client.randomDPoPKeyPair('ES256');
  const ath = crypto.createHash('sha256').update(tokens.access_token).digest('base64url');
  const wrongKey = await fetch(`${cas.issuer}/userinfo`, {
    headers: {
      Authorization: `DPoP ${tokens.access_token}`,
      DPoP: await proof(other, { htm: 'GET', htu: `${cas.issuer}/userinfo`, extra: { ath } }),
    },
  });
  assert.equal(wrongKey.status, 401);
  assert.match(wrongKey.headers.get('www-authenticate') ?? '', /^DPoP .*error="invalid_dpop_proof"/);

  // A refresh with another key: refused, and the token stays usable by its key.
  const otherHandle = client.getDPoPHandle(config, other);
  const e = await rejects(() => client.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP: otherHandle }),
    'refresh with another key');
  assertOAuthError(e, 'invalid_grant', 400, 'refresh with another key');
  const e2 = await rejects(() => client.refreshTokenGrant(config, tokens.refresh_token), 'refresh without DPoP');
  assertOAuthError(e2, 'invalid_grant', 400, 'refresh without DPoP');
  let refreshed;
  try {
    refreshed = await client.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP });
  } catch (err) {
    assert.fail(`refresh with the key: ${describeError(err)}\n${cas.log()}`);
  }
  assert.equal(refreshed.token_type.toLowerCase(), 'dpop');
  assert.deepEqual(decodeJwt(refreshed.access_token).payload.cnf, { jkt });
});

test('dpop: a replayed proof is refused', async () => {
  const { cas } = env;
  const keyPair = await client.randomDPoPKeyPair('ES256');
  const p = await proof(keyPair, { htu: `${cas.issuer}/token` });
  const first = await postForm(`${cas.issuer}/token`, machineForm(MACHINE), { headers: { DPoP: p } });
  assert.equal(first.status, 200, first.text);
  assert.equal(first.json.token_type, 'DPoP');
  // Introspection tells the binding (RFC 9449 §6.2).
  const jkt = await jose.calculateJwkThumbprint(await jose.exportJWK(keyPair.publicKey));
  const intro = await postForm(`${cas.issuer}/introspect`, { token: first.json.access_token },
    { basic: [MACHINE.client_id, MACHINE.client_secret] });
  assert.equal(intro.json?.active, true, intro.text);
  assert.equal(intro.json.token_type, 'DPoP');
  assert.deepEqual(intro.json.cnf, { jkt });
  const again = await postForm(`${cas.issuer}/token`, machineForm(MACHINE), { headers: { DPoP: p } });
  assert.equal(again.status, 400, again.text);
  assert.equal(again.json.error, 'invalid_dpop_proof');
});

test('dpop: a proof for another URL, method or time is refused', async () => {
  const { cas } = env;
  const keyPair = await client.randomDPoPKeyPair('ES256');
  const cases = {
    'wrong htu': { htu: `${cas.issuer}/userinfo` },
    'wrong htm': { htm: 'GET', htu: `${cas.issuer}/token` },
    'old iat': { htu: `${cas.issuer}/token`, iat: now() - 3600 },
  };
  for (const [what, claims] of Object.entries(cases)) {
    const r = await postForm(`${cas.issuer}/token`, machineForm(MACHINE), { headers: { DPoP: await proof(keyPair, claims) } });
    assert.equal(r.status, 400, `${what}: ${r.text}`);
    assert.equal(r.json.error, 'invalid_dpop_proof', what);
  }
  // The query of the URL does not count (RFC 9449 §4.3).
  const ok = await postForm(`${cas.issuer}/token`, machineForm(MACHINE),
    { headers: { DPoP: await proof(keyPair, { htu: `${cas.issuer}/token?x=1#f` }) } });
  assert.equal(ok.status, 200, ok.text);
});

test('dpop: a client with dpop_bound_access_tokens must send a proof', async () => {
  const { cas } = env;
  const none = await postForm(`${cas.issuer}/token`, machineForm(BOUND));
  assert.equal(none.status, 400, none.text);
  assert.equal(none.json.error, 'invalid_dpop_proof');
  const keyPair = await client.randomDPoPKeyPair('ES256');
  const ok = await postForm(`${cas.issuer}/token`, machineForm(BOUND),
    { headers: { DPoP: await proof(keyPair, { htu: `${cas.issuer}/token` }) } });
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.json.token_type, 'DPoP');
});

test('dpop: with nonces on, a proof without the nonce gets use_dpop_nonce and a DPoP-Nonce to retry with', async () => {
  const { cas, rp } = nonceEnv;
  const keyPair = await client.randomDPoPKeyPair('ES256');
  const first = await postForm(`${cas.issuer}/token`, machineForm(MACHINE),
    { headers: { DPoP: await proof(keyPair, { htu: `${cas.issuer}/token` }) } });
  assert.equal(first.status, 400, first.text);
  assert.equal(first.json.error, 'use_dpop_nonce');
  const nonce = first.headers.get('dpop-nonce');
  assert.ok(nonce, 'DPoP-Nonce header');
  const second = await postForm(`${cas.issuer}/token`, machineForm(MACHINE),
    { headers: { DPoP: await proof(keyPair, { htu: `${cas.issuer}/token`, extra: { nonce } }) } });
  assert.equal(second.status, 200, second.text);
  const forged = await postForm(`${cas.issuer}/token`, machineForm(MACHINE),
    { headers: { DPoP: await proof(keyPair, { htu: `${cas.issuer}/token`, extra: { nonce: `${nonce}x` } }) } });
  assert.equal(forged.json?.error, 'use_dpop_nonce', forged.text);

  // openid-client retries on the challenge by itself, at the token endpoint and at userinfo.
  const config = await discover(cas, PUBLIC.client_id, { token_endpoint_auth_method: 'none' }, client.None());
  const DPoP = client.getDPoPHandle(config, keyPair);
  const browser = new Browser(cas);
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.publicCallback, scope: 'openid email' });
  const { response } = await authorize(browser, req.url, { redirectUri: rp.urls.publicCallback });
  let tokens;
  try {
    tokens = await client.authorizationCodeGrant(config, response, {
      pkceCodeVerifier: req.codeVerifier, expectedState: req.state, expectedNonce: req.nonce,
    }, undefined, { DPoP });
  } catch (e) {
    assert.fail(`DPoP code grant with nonces: ${describeError(e)}\n${cas.log()}`);
  }
  const info = await client.fetchUserInfo(config, tokens.access_token, client.skipSubjectCheck, { DPoP });
  assert.equal(info.email, 'casuser@example.org');
});

test('dpop: a proof used at one node is refused at another sharing the Redis store', async () => {
  const [redisPort, portA, portB, rpPort] = await distinctPorts(4);
  const redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' });
  const rp = await startRp({ port: rpPort });
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'castellan-dpop-cluster-'));
  const nodes = [];
  try {
    // Both nodes behind one public URL, as behind a load balancer.
    const shared = `http://127.0.0.1:${portA}/cas`;
    // And one data_dir: the signing keys are the cluster's.
    const clustered = (args) => `${withBoundClient(args)
      .replace(/^public_url = .*$/m, `public_url = "${shared}"`)
      .replace(/^data_dir = .*$/m, `data_dir = ${tomlString(dataDir)}`)}
[tickets]
store = "redis"
redis_url = "redis://127.0.0.1:${redisPort}"
`;
    for (const [i, port] of [portA, portB].entries()) {
      let lastError;
      for (let attempt = 0; attempt < 20 && nodes.length === i; attempt += 1) {
        try {
          nodes.push(await startCastellan({ port, rpOrigin: rp.origin, name: `dpop-node${i + 1}`, config: clustered }));
        } catch (e) {
          lastError = e; // redis-server still starting
          await new Promise((r) => setTimeout(r, 250));
        }
      }
      assert.equal(nodes.length, i + 1, `node ${i + 1}: ${lastError}`);
    }
    const keyPair = await client.randomDPoPKeyPair('ES256');
    const p = await proof(keyPair, { htu: `${shared}/oidc/token` });
    const atA = await postForm(`${nodes[0].issuer}/token`, machineForm(MACHINE), { headers: { DPoP: p } });
    assert.equal(atA.status, 200, atA.text);
    const atB = await postForm(`${nodes[1].issuer}/token`, machineForm(MACHINE), { headers: { DPoP: p } });
    assert.equal(atB.status, 400, atB.text);
    assert.equal(atB.json.error, 'invalid_dpop_proof');
    // A fresh proof is good at node B.
    const fresh = await postForm(`${nodes[1].issuer}/token`, machineForm(MACHINE),
      { headers: { DPoP: await proof(keyPair, { htu: `${shared}/oidc/token` }) } });
    assert.equal(fresh.status, 200, fresh.text);
  } finally {
    for (const n of nodes) await n.stop();
    await rp.stop();
    redis.kill('SIGTERM');
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
