// A browser-only application (a public client with PKCE, no server of its
// own) in a real browser (Debian's Chromium): a static page on another origin
// does the code flow and calls the token and userinfo endpoints with fetch(),
// which CORS allows for its registered origin. The same page on an
// unregistered origin is refused by the browser. Run through tests/browser/run.sh.

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';
import {
  USERS, freePort, launchBrowser, shot, startCastellan,
} from '../lib/harness.mjs';

let cas;
let spa;
let stranger;
let browser;

const CLIENT_ID = 'spa-app';

/**
 * The application: one static HTML page. Without a `code` in its URL it
 * starts the code flow (PKCE S256); with one it redeems it with fetch() at the
 * token endpoint, calls userinfo with the access token, and writes what
 * happened into `document.body.dataset.result` (JSON).
 */
function appPage(issuer, clientId) {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>SPA</title></head><body>
<pre id="out">…</pre>
<script type="module">
const issuer = ${JSON.stringify(issuer)};
const clientId = ${JSON.stringify(clientId)};
const redirectUri = location.origin + '/app.html';
const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
  .replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
const done = (result) => {
  document.body.dataset.result = JSON.stringify(result);
  document.getElementById('out').textContent = JSON.stringify(result, null, 1);
};
async function start() {
  const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
  const challenge = b64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
  const state = b64url(crypto.getRandomValues(new Uint8Array(16)));
  sessionStorage.setItem('pkce', JSON.stringify({ verifier, state }));
  const u = new URL(issuer + '/authorize');
  Object.entries({ client_id: clientId, redirect_uri: redirectUri, response_type: 'code', scope: 'openid email',
    state, code_challenge: challenge, code_challenge_method: 'S256' }).forEach(([k, v]) => u.searchParams.set(k, v));
  location.assign(u.href);
}
async function finish(params) {
  const { verifier, state } = JSON.parse(sessionStorage.getItem('pkce') || '{}');
  const result = { stateMatches: params.get('state') === state };
  try {
    const r = await fetch(issuer + '/token', {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: params.get('code'),
        redirect_uri: redirectUri, client_id: clientId, code_verifier: verifier }),
    });
    result.tokenStatus = r.status;
    const tokens = await r.json();
    result.gotAccessToken = Boolean(tokens.access_token);
    result.gotIdToken = Boolean(tokens.id_token);
    // Authorization header: a preflighted request.
    const u = await fetch(issuer + '/userinfo', { headers: { Authorization: 'Bearer ' + tokens.access_token } });
    result.userinfoStatus = u.status;
    result.userinfo = await u.json();
  } catch (e) {
    result.error = String(e);
  }
  done(result);
}
const params = new URLSearchParams(location.search);
if (params.has('code')) finish(params);
else if (params.has('error')) done({ authorizeError: params.get('error') });
else if (location.hash === '#probe') window.probeReady = true;
else start();
</script></body></html>`;
}

/** Serves `page` at /app.html on 127.0.0.1:port. */
async function startSite(port, page) {
  const site = { origin: `http://127.0.0.1:${port}`, page };
  const server = http.createServer((req, res) => {
    if (req.url.split('?')[0] === '/app.html') {
      res.setHeader('Content-Type', 'text/html; charset=utf-8');
      res.setHeader('Cache-Control', 'no-store');
      res.end(site.page);
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  site.stop = () => new Promise((resolve) => {
    server.closeAllConnections?.();
    server.close(() => resolve());
  });
  return site;
}

before(async () => {
  const ports = new Set();
  while (ports.size < 4) ports.add(await freePort());
  const [port, appPort, spaPort, strangerPort] = [...ports];
  const issuer = `http://127.0.0.1:${port}/cas/oidc`;
  spa = await startSite(spaPort, appPage(issuer, CLIENT_ID));
  stranger = await startSite(strangerPort, appPage(issuer, CLIENT_ID));
  const services = `
[[services]]
name = "Browser app"
protocol = "oidc"
client_id = "${CLIENT_ID}"
token_endpoint_auth_method = "none"
redirect_uris = ["${spa.origin}/app.html"]
scopes = ["openid", "email"]
release = ["mail"]
`;
  cas = await startCastellan({ port, appPort, services, logName: 'castellan-spa-cors.log' });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close().catch((e) => console.error('closing chromium:', e));
  const exit = await cas?.stop().catch((e) => console.error('stopping castellan:', e));
  await spa?.stop().catch(() => {});
  await stranger?.stop().catch(() => {});
  if (exit && exit.signal === null && exit.code !== 0) {
    console.error(`castellan exited with code ${exit.code} on SIGTERM (see ${cas.logPath})`);
  }
});

async function withPage(name, fn) {
  const context = await browser.newContext();
  context.setDefaultTimeout(15_000);
  const page = await context.newPage();
  try {
    await fn(page);
  } catch (err) {
    await shot(page, `FAILED-${name}`).catch(() => {});
    throw err;
  } finally {
    await context.close();
  }
}

test('a browser app on its registered origin does code + PKCE with fetch() to the token and userinfo endpoints', async () => {
  await withPage('spa-cors', async (page) => {
    await page.goto(`${spa.origin}/app.html`);
    await page.getByLabel('Username').fill(USERS.casuser.username);
    await page.getByLabel('Password', { exact: true }).fill(USERS.casuser.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForFunction(() => document.body.dataset.result, null, { timeout: 15_000 });
    const result = JSON.parse(await page.evaluate(() => document.body.dataset.result));
    assert.equal(page.url().startsWith(`${spa.origin}/app.html?`), true, page.url());
    assert.equal(result.error, undefined, `fetch failed: ${JSON.stringify(result)}`);
    assert.equal(result.stateMatches, true);
    assert.equal(result.tokenStatus, 200, JSON.stringify(result));
    assert.equal(result.gotAccessToken && result.gotIdToken, true, JSON.stringify(result));
    assert.equal(result.userinfoStatus, 200);
    assert.equal(result.userinfo.email, 'casuser@example.org');
  });
});

test('the same calls from an unregistered origin are refused by the browser; discovery and JWKS are readable', async () => {
  await withPage('spa-cors-stranger', async (page) => {
    await page.goto(`${stranger.origin}/app.html#probe`);
    await page.waitForFunction(() => window.probeReady === true);
    const issuer = `${cas.base}/oidc`;
    const outcome = await page.evaluate(async (iss) => {
      const attempt = async (f) => {
        try {
          const r = await f();
          return `status ${r.status}`;
        } catch (e) {
          return `rejected: ${e.name}`;
        }
      };
      return {
        token: await attempt(() => fetch(`${iss}/token`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
          body: 'grant_type=authorization_code&code=x&client_id=spa-app',
        })),
        userinfo: await attempt(() => fetch(`${iss}/userinfo`, { headers: { Authorization: 'Bearer x' } })),
        discovery: await attempt(() => fetch(`${iss}/.well-known/openid-configuration`)),
        jwks: await attempt(() => fetch(`${iss}/jwks`)),
      };
    }, issuer);
    assert.equal(outcome.token, 'rejected: TypeError', `token endpoint: ${JSON.stringify(outcome)}`);
    assert.equal(outcome.userinfo, 'rejected: TypeError', `userinfo: ${JSON.stringify(outcome)}`);
    assert.equal(outcome.discovery, 'status 200', `discovery: ${JSON.stringify(outcome)}`);
    assert.equal(outcome.jwks, 'status 200', `jwks: ${JSON.stringify(outcome)}`);
  });
});

test('preflights: cached (Max-Age, Vary: Origin), never with credentials', async () => {
  const r = await fetch(`${cas.base}/oidc/userinfo`, {
    method: 'OPTIONS',
    headers: { Origin: spa.origin, 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Headers': 'authorization' },
  });
  assert.equal(r.status, 204);
  assert.equal(r.headers.get('access-control-allow-origin'), spa.origin);
  assert.ok(Number(r.headers.get('access-control-max-age')) > 0, 'Max-Age');
  assert.match(r.headers.get('vary') ?? '', /origin/i);
  assert.match(r.headers.get('access-control-allow-headers') ?? '', /authorization/);
  assert.equal(r.headers.get('access-control-allow-credentials'), null);
  const refused = await fetch(`${cas.base}/oidc/token`, {
    method: 'OPTIONS',
    headers: { Origin: stranger.origin, 'Access-Control-Request-Method': 'POST' },
  });
  assert.equal(refused.headers.get('access-control-allow-origin'), null);
  const jwks = await fetch(`${cas.base}/oidc/jwks`, { headers: { Origin: stranger.origin } });
  assert.equal(jwks.headers.get('access-control-allow-origin'), '*');
  assert.equal(jwks.headers.get('access-control-allow-credentials'), null);
});
