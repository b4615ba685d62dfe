// Delegated authentication behind the OpenID Provider: openid-client logs in
// at a castellan ("downstream") whose login page hands the login to an
// upstream CAS server, a second castellan ("upstream", configured as
// [[upstreams]] name = "campus", protocol = "cas"). The browser follows the
// login page's `client_name=campus` link instead of posting the form, signs
// in at the upstream, comes back through the downstream's
// /delegated/campus/callback and its OIDC callback to redirect_uri?code=…;
// openid-client then validates the ID token, whose subject is the mapped
// principal "campus:casuser" and whose email is the upstream's mail.
// Run through tests/oidc-client/run.sh.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as client from 'openid-client';
import {
  Browser, CONFIDENTIAL, OIDC_DEFAULTS, USER, authorizationRequest, authorize, codeFlow, describeError, discover,
  distinctPorts, rpUrls, startCastellan, startRp, tomlList, tomlString,
} from '../lib/harness.mjs';
import { query, scopes } from '../lib/checks.mjs';

const UPSTREAM = 'campus';
const PRINCIPAL = `${UPSTREAM}:${USER.username}`;
const SCOPE = 'openid profile email';

/**
 * The downstream's own user of the same name, with another password and
 * other attributes: nothing of it may show up in a delegated login.
 */
const LOCAL = {
  username: USER.username,
  password: 'local-only-password-9d2e',
  mail: 'casuser@downstream.example',
  cn: 'Local Namesake',
};

let rp;
let upstream;
let downstream;
let config;

/** The upstream CAS server: the harness's user, and a CAS service for the downstream's callback. */
const upstreamConfig = (downPort) => ({ port, dataDir }) => `
[server]
listen = "127.0.0.1:${port}"
public_url = "http://127.0.0.1:${port}/cas"
data_dir = ${tomlString(dataDir)}

[[users]]
username = ${tomlString(USER.username)}
password = ${tomlString(USER.password)}
attributes = { mail = ${tomlString(USER.attributes.mail)}, cn = ${tomlString(USER.attributes.cn)}, memberOf = ${tomlList(USER.attributes.memberOf)}, secret = ${tomlString(USER.attributes.secret)} }

# the downstream castellan, a CAS client of this server (delegated authentication)
[[services]]
name = "downstream"
protocol = "cas"
service = '^http://127\\.0\\.0\\.1:${downPort}/cas/delegated/${UPSTREAM}/callback\\?state=[A-Za-z0-9-]+$'
release = ["mail", "cn", "memberOf"]
`;

/** The downstream: an OpenID Provider with one confidential client, and the upstream as "campus". */
const downstreamConfig = (upstreamBase) => ({ port, rpOrigin, dataDir, oidc }) => `
[server]
listen = "127.0.0.1:${port}"
public_url = "http://127.0.0.1:${port}/cas"
data_dir = ${tomlString(dataDir)}

[oidc]
${Object.entries({ ...OIDC_DEFAULTS, ...oidc }).map(([k, v]) => `${k} = ${tomlString(v)}`).join('\n')}

[[users]]
username = ${tomlString(LOCAL.username)}
password = ${tomlString(LOCAL.password)}
attributes = { mail = ${tomlString(LOCAL.mail)}, cn = ${tomlString(LOCAL.cn)} }

[[services]]
name = "Confidential RP"
protocol = "oidc"
client_id = ${tomlString(CONFIDENTIAL.client_id)}
client_secret = ${tomlString(CONFIDENTIAL.client_secret)}
redirect_uris = ${tomlList([rpUrls(rpOrigin).callback])}
scopes = ["openid", "profile", "email"]
release = ["mail", "cn"]
grant_types = ["authorization_code", "refresh_token"]

[[upstreams]]
name = ${tomlString(UPSTREAM)}
protocol = "cas"
url = ${tomlString(upstreamBase)}
display_name = "Campus account"
principal = "${UPSTREAM}:{id}"
`;

before(async () => {
  const [upPort, downPort, rpPort] = await distinctPorts(3);
  rp = await startRp({ port: rpPort });
  upstream = await startCastellan({ port: upPort, rpOrigin: rp.origin, name: 'delegation-upstream', config: upstreamConfig(downPort) });
  downstream = await startCastellan({ port: downPort, rpOrigin: rp.origin, name: 'delegation-downstream', config: downstreamConfig(upstream.base) });
  config = await discover(downstream, CONFIDENTIAL.client_id, CONFIDENTIAL.client_secret, client.ClientSecretBasic(CONFIDENTIAL.client_secret));
  // openid-client also verifies the ID token's signature against the downstream's jwks_uri
  client.enableNonRepudiationChecks(config);
});

after(async () => {
  for (const [what, stop] of [['downstream', downstream?.stop], ['upstream', upstream?.stop], ['relying party', rp?.stop]]) {
    await stop?.().catch((e) => console.error(`stopping the ${what}:`, e));
  }
});

const logs = () => `--- downstream log:\n${downstream.log()}\n--- upstream log:\n${upstream.log()}`;

test('code flow delegated to an upstream CAS: client_name=campus link → upstream login → /delegated/campus/callback → redirect_uri?code; ID token sub "campus:casuser", email from the upstream', async () => {
  const browser = new Browser(downstream, { also: [upstream] });
  const req = await authorizationRequest(config, { redirect_uri: rp.urls.callback, scope: SCOPE });

  let walked;
  try {
    walked = await authorize(browser, req.url, { redirectUri: rp.urls.callback, login: USER, follow: `client_name=${UPSTREAM}` });
  } catch (e) {
    assert.fail(`the delegated authorization request failed: ${e.message}\n${logs()}`);
  }
  const { response, hops, followed } = walked;
  const trace = `${browser.trace()}`;
  const at = (origin, p) => (h) => String(h.url).startsWith(`${origin}${p}`);

  // 1. the downstream's authorization endpoint → its CAS login, service = its OIDC callback
  assert.equal(hops[0].status, 302, `authorize redirects to the login:\n${trace}`);
  const toLogin = new URL(hops[0].location);
  assert.equal(`${toLogin.origin}${toLogin.pathname}`, `${downstream.base}/login`, `authorize → downstream /cas/login:\n${trace}`);
  const oidcService = toLogin.searchParams.get('service') || '';
  assert.ok(oidcService.startsWith(`${downstream.issuer}/callback?client_id=`), `service= is the OIDC callback (${oidcService})`);
  const loginPage = hops[1];
  assert.ok(loginPage && String(loginPage.url) === toLogin.href && loginPage.status === 200, `the downstream login page is shown:\n${trace}`);

  // 2. its "Campus account" link keeps the service, and starts the delegation
  assert.ok(followed, 'a client_name link was followed');
  const link = new URL(followed.href);
  assert.equal(`${link.origin}${link.pathname}`, `${downstream.base}/login`, `the link is to the downstream's /login: ${followed.href}`);
  assert.equal(link.searchParams.get('client_name'), UPSTREAM, `client_name=${UPSTREAM}: ${followed.href}`);
  assert.equal(link.searchParams.get('service'), oidcService, `the link keeps service=: ${followed.href}`);
  assert.equal(followed.text, 'Campus account', 'the link is labelled with display_name');
  const start = hops.find((h) => String(h.url) === followed.href);
  assert.equal(start?.status, 302, `/login?client_name=${UPSTREAM} redirects:\n${trace}`);
  const toUpstream = new URL(start.location);
  assert.equal(`${toUpstream.origin}${toUpstream.pathname}`, `${upstream.base}/login`, `→ the upstream's /cas/login:\n${trace}`);
  const delegatedService = toUpstream.searchParams.get('service') || '';
  assert.match(delegatedService, new RegExp(`^${downstream.base.replace(/[.]/g, '\\.')}/delegated/${UPSTREAM}/callback\\?state=[A-Za-z0-9-]+$`),
    'service= at the upstream is the downstream\'s delegation callback with a state');

  // 3. the password goes to the upstream, never to the downstream
  const posts = hops.filter((h) => h.method === 'POST');
  assert.equal(posts.length, 1, `one login POST:\n${trace}`);
  assert.ok(at(upstream.origin, '/cas/login')(posts[0]), `the login POST is at the upstream:\n${trace}`);
  assert.equal(posts[0].status, 302, `the upstream login succeeds:\n${trace}\n${logs()}`);
  const back = new URL(posts[0].location);
  assert.equal(`${back.origin}${back.pathname}${back.search.replace(/&ticket=.*$/, '')}`, delegatedService,
    `the upstream returns to the delegation callback with the same state:\n${trace}`);
  assert.match(back.searchParams.get('ticket') || '', /^ST-/, 'with an upstream service ticket');

  // 4. the downstream validates it, opens its session, and returns to its OIDC callback with its own ticket
  const callback = hops.find((h) => String(h.url) === back.href);
  assert.equal(callback?.status, 302, `the delegation callback redirects (status ${callback?.status}):\n${trace}\n${logs()}`);
  const toOidc = new URL(callback.location);
  assert.ok(toOidc.href.startsWith(oidcService), `→ the OIDC callback of this request:\n${trace}`);
  assert.match(toOidc.searchParams.get('ticket') || '', /^ST-/, 'with a downstream service ticket');
  assert.notEqual(toOidc.searchParams.get('ticket'), back.searchParams.get('ticket'), 'not the upstream\'s ticket');
  assert.equal(browser.cookie('CASDELEG'), undefined, 'the delegation binding cookie is cleared');
  assert.equal(browser.cookie('CASTGC')?.path, '/cas', 'a downstream SSO session cookie');

  // 5. the authorization response
  const resp = query(response);
  assert.ok(resp.code, `a code in the authorization response: ${response}`);
  assert.equal(resp.state, req.state, 'state is returned unchanged');
  assert.equal(resp.iss, downstream.issuer, 'iss of the downstream (RFC 9207)');
  assert.equal(resp.error, undefined, `no error: ${response}`);

  // 6. openid-client: code + PKCE verifier → tokens; ID token validated (iss, aud, azp, exp, iat, nonce, signature)
  let tokens;
  try {
    tokens = await client.authorizationCodeGrant(config, response, {
      pkceCodeVerifier: req.codeVerifier,
      expectedState: req.state,
      expectedNonce: req.nonce,
      idTokenExpected: true,
    });
  } catch (e) {
    assert.fail(`authorizationCodeGrant: ${describeError(e)}\n${logs()}`);
  }
  assert.ok(tokens.access_token && tokens.id_token, 'access and ID tokens');
  assert.deepEqual(scopes(tokens.scope), scopes(SCOPE), 'scope granted as asked');
  const c = tokens.claims();
  assert.equal(c.iss, downstream.issuer, 'iss is the downstream');
  assert.equal(c.sub, PRINCIPAL, `sub is the mapped principal (principal = "${UPSTREAM}:{id}")`);
  assert.equal(c.nonce, req.nonce, 'nonce');
  assert.equal(c.email, USER.attributes.mail, 'email from the upstream\'s mail (not the local namesake\'s)');
  assert.equal(c.name, USER.attributes.cn, 'name from the upstream\'s cn (not the local namesake\'s)');
  assert.equal(c.memberOf, undefined, 'memberOf: the upstream released it, the downstream client does not');
  assert.equal(c.secret, undefined, 'secret: never released by the upstream');

  // 7. UserInfo says the same (openid-client checks sub against the ID token's)
  let info;
  try {
    info = await client.fetchUserInfo(config, tokens.access_token, c.sub);
  } catch (e) {
    assert.fail(`fetchUserInfo: ${describeError(e)}\n${logs()}`);
  }
  assert.equal(info.sub, PRINCIPAL, 'userinfo sub');
  assert.equal(info.email, USER.attributes.mail, 'userinfo email');

  // 8. single sign-on at the downstream: a second authorization needs neither form nor upstream
  let again;
  try {
    again = await codeFlow(browser, config, { redirectUri: rp.urls.callback, params: { scope: SCOPE }, login: null });
  } catch (e) {
    assert.fail(`second code flow (SSO): ${describeError(e)}\n${browser.trace()}\n${logs()}`);
  }
  assert.equal(again.loginForms, 0, `no login form the second time:\n${browser.trace()}`);
  assert.ok(!again.hops.some((h) => String(h.url).startsWith(upstream.origin)), `no trip to the upstream the second time:\n${browser.trace()}`);
  assert.equal(again.tokens.claims().sub, PRINCIPAL, 'same subject from the SSO session');
  assert.equal(again.tokens.claims().email, USER.attributes.mail, 'same email from the SSO session');
});
