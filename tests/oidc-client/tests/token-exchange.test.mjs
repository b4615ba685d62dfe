// Token exchange (RFC 8693) with openid-client's genericGrantRequest: a
// service exchanges a user's access token issued to another client, when
// that pair is allowed; the result is narrower and names the actor. Run
// through tests/oidc-client/run.sh.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as client from 'openid-client';
import {
  Browser, CONFIDENTIAL, MACHINE, USER, codeFlow, configText, decodeJwt, discover, distinctPorts, postForm, rejects,
  startCastellan, startRp, tomlList, tomlString,
} from '../lib/harness.mjs';
import { assertOAuthError, scopes, verifyJwt } from '../lib/checks.mjs';

const GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
/** May exchange the confidential RP's tokens; svc-c is its resource server. */
const SVC_B = { client_id: 'svc-b', client_secret: 'svc-b-secret-41c7' };
/** May exchange svc-b's tokens only. */
const SVC_C = { client_id: 'svc-c', client_secret: 'svc-c-secret-8e02' };

const withServices = (args) => `${configText(args)}
[[services]]
name = "Service B"
protocol = "oidc"
client_id = ${tomlString(SVC_B.client_id)}
client_secret = ${tomlString(SVC_B.client_secret)}
redirect_uris = ${tomlList([`${args.rpOrigin}/svc-b/unused`])}
grant_types = ["${GRANT}"]
token_exchange_from = ["${CONFIDENTIAL.client_id}"]
resource_servers = ["${SVC_C.client_id}"]

[[services]]
name = "Service C"
protocol = "oidc"
client_id = ${tomlString(SVC_C.client_id)}
client_secret = ${tomlString(SVC_C.client_secret)}
redirect_uris = ${tomlList([`${args.rpOrigin}/svc-c/unused`])}
grant_types = ["${GRANT}"]
token_exchange_from = ["${SVC_B.client_id}"]
`;

let rp;
let cas;
let rpConfig;
let svcB;
let svcC;
let userToken;

before(async () => {
  const [port, rpPort] = await distinctPorts(2);
  rp = await startRp({ port: rpPort });
  cas = await startCastellan({ port, rpOrigin: rp.origin, name: 'token-exchange', config: withServices });
  rpConfig = await discover(cas, CONFIDENTIAL.client_id, CONFIDENTIAL.client_secret);
  svcB = await discover(cas, SVC_B.client_id, SVC_B.client_secret);
  svcC = await discover(cas, SVC_C.client_id, SVC_C.client_secret);
  const { tokens } = await codeFlow(new Browser(cas), rpConfig, {
    redirectUri: rp.urls.callback, params: { scope: 'openid email memberOf' },
  });
  userToken = tokens.access_token;
});

after(async () => {
  await cas?.stop();
  await rp?.stop();
});

const exchange = (config, parameters) => client.genericGrantRequest(config, GRANT, {
  subject_token: userToken, subject_token_type: ACCESS_TOKEN, ...parameters,
});

test('token exchange: an allowed pair gets a narrower token for the same user, with act', async () => {
  const r = await exchange(svcB, { scope: 'openid email', audience: SVC_C.client_id });
  assert.equal(r.issued_token_type, ACCESS_TOKEN);
  assert.equal(r.token_type.toLowerCase(), 'bearer');
  assert.deepEqual(scopes(r.scope), ['email', 'openid']);
  const { payload } = await verifyJwt(cas, r.access_token, { issuer: cas.issuer }, 'the exchanged token');
  assert.equal(payload.sub, USER.username, 'the same user');
  assert.equal(payload.client_id, SVC_B.client_id);
  assert.equal(payload.aud, SVC_C.client_id);
  assert.deepEqual(payload.act, { sub: SVC_B.client_id, client_id: SVC_B.client_id });
  assert.ok(payload.exp <= decodeJwt(userToken).payload.exp, 'no longer-lived than the subject token');
  // The audience (svc-c, svc-b's resource server) introspects it and sees the actor.
  const intro = await postForm(`${cas.issuer}/introspect`, { token: r.access_token }, { basic: [SVC_C.client_id, SVC_C.client_secret] });
  assert.equal(intro.json?.active, true, intro.text);
  assert.deepEqual(intro.json.act, payload.act);
  // It is the user's: userinfo answers for them.
  const info = await client.fetchUserInfo(svcB, r.access_token, USER.username);
  assert.equal(info.email, USER.attributes.mail);

  // svc-c may exchange svc-b's token in turn: the actors nest.
  const chained = await client.genericGrantRequest(svcC, GRANT, { subject_token: r.access_token, subject_token_type: ACCESS_TOKEN });
  const act = decodeJwt(chained.access_token).payload.act;
  assert.deepEqual(act, { sub: SVC_C.client_id, client_id: SVC_C.client_id, act: payload.act });
});

test('token exchange: a pair not allowed, a wider scope or audience, a bad token are refused', async () => {
  // svc-c may not exchange the RP's tokens.
  assertOAuthError(await rejects(() => exchange(svcC, {}), 'svc-c exchanging the RP token'), 'unauthorized_client', 400);
  // A client without the grant type (client_credentials only).
  const machine = await discover(cas, MACHINE.client_id, MACHINE.client_secret);
  assertOAuthError(await rejects(() => exchange(machine, {}), 'a client without the grant'), 'unauthorized_client', 400);
  // Scopes the subject token does not have.
  assertOAuthError(await rejects(() => exchange(svcB, { scope: 'openid profile' }), 'a wider scope'), 'invalid_scope', 400);
  // An audience that is not svc-b nor its resource server.
  assertOAuthError(await rejects(() => exchange(svcB, { audience: MACHINE.client_id }), 'another audience'), 'invalid_target', 400);
  // Not an access token of ours.
  const forged = await rejects(() => client.genericGrantRequest(svcB, GRANT, {
    subject_token: `${userToken.slice(0, -4)}AAAA`, subject_token_type: ACCESS_TOKEN,
  }), 'a forged token');
  assertOAuthError(forged, 'invalid_request', 400);
  const idType = await rejects(() => exchange(svcB, { subject_token_type: 'urn:ietf:params:oauth:token-type:id_token' }), 'an ID token type');
  assertOAuthError(idType, 'invalid_request', 400);
});

test('token exchange: discovery lists the grant type', async () => {
  const meta = await (await fetch(`${cas.issuer}/.well-known/openid-configuration`)).json();
  assert.ok(meta.grant_types_supported.includes(GRANT), JSON.stringify(meta.grant_types_supported));
});
