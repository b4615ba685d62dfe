// Harness of the OpenID Connect client tests: a real castellan process with an
// OpenID Provider configured, a relying party's HTTP server (records
// back-channel logout POSTs and anything else that reaches it), and a tiny
// "browser" (fetch + cookie jar, redirects followed by hand) that walks the
// CAS login form.
//
// The relying-party side of the protocol is done by the certified library
// openid-client (v6); this harness only plays the user agent.
//
// Everything listens on 127.0.0.1 only, on ports picked free at start.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as client from 'openid-client';

const here = path.dirname(fileURLToPath(import.meta.url));
export const SUITE_DIR = path.resolve(here, '..');
export const REPO = path.resolve(SUITE_DIR, '..', '..');
export const OUT = path.join(SUITE_DIR, '.out');
export const BINARY = process.env.CASTELLAN_BIN || path.join(REPO, 'target', 'release', 'castellan');

export const USER = {
  username: 'casuser',
  password: 'Mellon',
  attributes: {
    mail: 'casuser@example.org',
    cn: 'CAS User',
    memberOf: ['staff', 'faculty'],
    // never released to anybody: no client lists it in `release`
    secret: 'do-not-release',
  },
};

/** The registered clients; redirect URIs are filled in by `clients(rpOrigin)`. */
export const CONFIDENTIAL = { client_id: 'rp-confidential', client_secret: 'conf-secret-3f9a1c' };
export const PUBLIC = { client_id: 'rp-public' };
export const MACHINE = { client_id: 'rp-machine', client_secret: 'machine-secret-77b2' };
export const PAIRWISE = { client_id: 'rp-pairwise', client_secret: 'pairwise-secret-0c1d' };
export const ES256 = { client_id: 'rp-es256', client_secret: 'es256-secret-5e6f' };

fs.mkdirSync(OUT, { recursive: true });

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** `n` distinct free loopback ports. */
export async function distinctPorts(n) {
  const ports = new Set();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

// ------------------------------------------------------------------ config

/** A TOML string (basic string; JSON escapes are valid TOML escapes for these values). */
const q = (s) => JSON.stringify(String(s));
const list = (xs) => `[${xs.map(q).join(', ')}]`;
/** TOML basic string and array of strings (for the config functions of startCastellan). */
export { q as tomlString, list as tomlList };

/** The URLs of the relying party (our Node HTTP server) the clients are registered with. */
export function rpUrls(rpOrigin) {
  return {
    callback: `${rpOrigin}/callback`,
    publicCallback: `${rpOrigin}/public/callback`,
    pairwiseCallback: `${rpOrigin}/pairwise/callback`,
    loggedOut: `${rpOrigin}/logged-out`,
    backchannel: `${rpOrigin}/bclogout`,
    casApp: `${rpOrigin}/app/`,
  };
}

export const OIDC_DEFAULTS = {
  code_ttl: '60s',
  access_token_ttl: '5m',
  id_token_ttl: '5m',
  refresh_token_ttl: '8h',
  offline_token_ttl: '30d',
  pairwise_salt: 'castellan-oidc-client-tests-salt',
};

export function configText({ port, rpOrigin, dataDir, oidc = {} }) {
  const u = rpUrls(rpOrigin);
  const rpPort = new URL(rpOrigin).port;
  const oidcSection = Object.entries({ ...OIDC_DEFAULTS, ...oidc }).map(([k, v]) => `${k} = ${q(v)}`).join('\n');
  return `
[server]
listen = "127.0.0.1:${port}"
public_url = "http://127.0.0.1:${port}/cas"
data_dir = ${q(dataDir)}

[oidc]
${oidcSection}

[[users]]
username = ${q(USER.username)}
password = ${q(USER.password)}
attributes = { mail = ${q(USER.attributes.mail)}, cn = ${q(USER.attributes.cn)}, memberOf = ${list(USER.attributes.memberOf)}, secret = ${q(USER.attributes.secret)} }

# a CAS service: an SSO session made there is reused by the OpenID Provider;
# an OIDC logout sends it a CAS back-channel logoutRequest
[[services]]
name = "cas-app"
protocol = "cas"
service = '^http://127\\.0\\.0\\.1:${rpPort}/app/.*$'
release = ["mail", "cn"]
logout = "back-channel"

# confidential client: code + refresh (default grant types), back-channel logout
[[services]]
name = "Confidential RP"
protocol = "oidc"
client_id = ${q(CONFIDENTIAL.client_id)}
client_secret = ${q(CONFIDENTIAL.client_secret)}
redirect_uris = ${list([u.callback])}
post_logout_redirect_uris = ${list([u.loggedOut])}
scopes = ["openid", "profile", "email", "offline_access", "memberOf"]
release = ["mail", "cn", "memberOf"]
backchannel_logout_uri = ${q(u.backchannel)}
grant_types = ["authorization_code", "refresh_token"]

# public client (no secret): PKCE S256 required
[[services]]
name = "Public RP"
protocol = "oidc"
client_id = ${q(PUBLIC.client_id)}
redirect_uris = ${list([u.publicCallback])}
post_logout_redirect_uris = ${list([u.loggedOut])}
scopes = ["openid", "profile", "email"]
release = ["mail", "cn"]

# machine-to-machine client: client_credentials only
[[services]]
name = "Machine"
protocol = "oidc"
client_id = ${q(MACHINE.client_id)}
client_secret = ${q(MACHINE.client_secret)}
redirect_uris = ${list([`${rpOrigin}/machine/unused`])}
scopes = ["api"]
release = []
grant_types = ["client_credentials"]

# pairwise subject identifiers
[[services]]
name = "Pairwise RP"
protocol = "oidc"
client_id = ${q(PAIRWISE.client_id)}
client_secret = ${q(PAIRWISE.client_secret)}
redirect_uris = ${list([u.pairwiseCallback])}
scopes = ["openid", "email"]
release = ["mail"]
subject = "pairwise"

# ES256 ID tokens, RS256 access tokens (the defaults are the other way round)
[[services]]
name = "ES256 RP"
protocol = "oidc"
client_id = ${q(ES256.client_id)}
client_secret = ${q(ES256.client_secret)}
redirect_uris = ${list([`${rpOrigin}/es256/callback`])}
scopes = ["openid", "email"]
release = ["mail"]
id_token_signing_alg = "ES256"
access_token_signing_alg = "RS256"
`;
}

// ------------------------------------------------------------------ castellan

const children = new Set();
process.on('exit', () => {
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

/**
 * Starts castellan with `configText(...)` (or `config`, a function of the
 * same arguments) and waits for /cas/health. Its log goes to .out/<name>.log.
 */
export async function startCastellan({ port, rpOrigin, name = 'castellan', config = configText, oidc = {} }) {
  if (!fs.existsSync(BINARY)) {
    throw new Error(`castellan binary not found at ${BINARY} (run cargo build --release)`);
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'castellan-oidc-'));
  const text = config({ port, rpOrigin, dataDir: path.join(tmp, 'data'), oidc });
  const configPath = path.join(tmp, 'castellan.toml');
  fs.writeFileSync(configPath, text);
  fs.writeFileSync(path.join(OUT, `${name}.toml`), text);
  const logPath = path.join(OUT, `${name}.log`);
  const log = fs.openSync(logPath, 'w');
  const child = spawn(BINARY, ['serve', '--config', configPath], {
    stdio: ['ignore', log, log],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
  });
  fs.closeSync(log);
  children.add(child);
  let exited = null;
  child.on('exit', (code, signal) => { exited = { code, signal }; children.delete(child); });

  const origin = `http://127.0.0.1:${port}`;
  const base = `${origin}/cas`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw new Error(`castellan exited at start (${JSON.stringify(exited)}):\n${tail(logPath)}`);
    }
    try {
      const r = await fetch(`${base}/health`);
      if (r.status === 200) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      fs.rmSync(tmp, { recursive: true, force: true });
      throw new Error(`castellan not healthy after 30 s:\n${tail(logPath)}`);
    }
    await sleep(100);
  }

  return {
    base,
    origin,
    issuer: `${base}/oidc`,
    logPath,
    log: () => tail(logPath),
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        const until = Date.now() + 10_000;
        while (!exited && Date.now() < until) await sleep(50);
        if (!exited) child.kill('SIGKILL');
      }
      fs.rmSync(tmp, { recursive: true, force: true });
      return exited;
    },
  };
}

export function tail(file, n = 40) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-n).join('\n');
  } catch {
    return '(no log)';
  }
}

// ------------------------------------------------------------- the relying party

/**
 * The relying party's HTTP server. Redirects to it are never followed (the
 * tests read the authorization response from the Location header), but
 * everything that reaches it is recorded in `rp.requests`; POSTs to
 * /bclogout (OpenID Connect Back-Channel Logout) are also in `rp.backchannel`.
 */
export async function startRp({ port }) {
  const rp = {
    origin: `http://127.0.0.1:${port}`,
    requests: [],
    backchannel: [],
    urls: null,
    /** Waits until `pred(rp.backchannel)` holds (or `ms` pass); returns whether it held. */
    async waitBackchannel(pred, ms = 5_000) {
      const until = Date.now() + ms;
      while (Date.now() < until) {
        if (pred(this.backchannel)) return true;
        await sleep(50);
      }
      return pred(this.backchannel);
    },
  };
  rp.urls = rpUrls(rp.origin);

  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks).toString('utf8');
    const entry = { method: req.method, url: req.url, headers: req.headers, body, at: Date.now() };
    rp.requests.push(entry);
    if (req.url.split('?')[0] === '/bclogout') {
      rp.backchannel.push(entry);
      if (req.method !== 'POST') {
        res.statusCode = 405;
        res.end();
        return;
      }
      // OIDC Back-Channel Logout 1.0 §2.8: 200 OK, Cache-Control: no-store
      res.statusCode = 200;
      res.setHeader('Cache-Control', 'no-store');
      res.end();
      return;
    }
    res.statusCode = 200;
    res.setHeader('Content-Type', 'text/plain; charset=utf-8');
    res.end('relying party\n');
  });
  await new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  rp.stop = () => new Promise((resolve) => {
    server.closeAllConnections?.();
    server.close(() => resolve());
  });
  return rp;
}

/**
 * Starts the relying party and castellan on free ports; `stop()` stops both.
 * `oidc`: keys of the [oidc] section to change (e.g. { code_ttl: '2s' }).
 */
export async function startAll(name, { oidc = {} } = {}) {
  const [port, rpPort] = await distinctPorts(2);
  const rp = await startRp({ port: rpPort });
  let cas;
  try {
    cas = await startCastellan({ port, rpOrigin: rp.origin, name, oidc });
  } catch (e) {
    await rp.stop();
    throw e;
  }
  return {
    cas,
    rp,
    async stop() {
      const exit = await cas.stop().catch((e) => console.error('stopping castellan:', e));
      await rp.stop().catch((e) => console.error('stopping the relying party:', e));
      if (exit && exit.signal === null && exit.code !== 0) {
        console.error(`castellan exited with code ${exit.code} on SIGTERM (see ${cas.logPath})`);
      }
    },
  };
}

// ------------------------------------------------------------------ openid-client

/**
 * openid-client Configuration by discovery. Plain http on loopback needs
 * allowInsecureRequests (openid-client v6 refuses http issuers otherwise).
 */
export function discover(cas, clientId, secret, auth) {
  return client.discovery(new URL(cas.issuer), clientId, secret, auth, {
    execute: [client.allowInsecureRequests],
    timeout: 10,
  });
}

/** Everything a relying party keeps between the authorization request and the callback. */
export async function authorizationRequest(config, params = {}, { pkce = true } = {}) {
  const codeVerifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const p = { scope: 'openid', state, nonce, ...params };
  if (pkce) {
    p.code_challenge = await client.calculatePKCECodeChallenge(codeVerifier);
    p.code_challenge_method = 'S256';
  }
  for (const [k, v] of Object.entries(p)) if (v === undefined) delete p[k];
  // state and nonce as sent (a test may leave them out with { state: undefined })
  return { url: client.buildAuthorizationUrl(config, p), codeVerifier, state: p.state, nonce: p.nonce, params: p };
}

// ------------------------------------------------------------------ the "browser"

const decodeEntities = (s) => s
  .replace(/&#x([0-9a-f]+);/gi, (_, h) => String.fromCodePoint(parseInt(h, 16)))
  .replace(/&#([0-9]+);/g, (_, d) => String.fromCodePoint(parseInt(d, 10)))
  .replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>')
  .replace(/&amp;/g, '&');

function attrs(tag) {
  const out = {};
  for (const m of tag.matchAll(/([a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*(?:=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g)) {
    out[m[1].toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return out;
}

/**
 * A form of an HTML page: { action (absolute), method, fields: {name: value} }
 * (inputs with a name; textarea/select are not needed here). `selector`:
 * '#id' or null for the first form.
 */
export function parseForm(html, pageUrl, selector = null) {
  const forms = [...html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)];
  const found = forms.find((m) => {
    if (!selector) return true;
    return selector.startsWith('#') && attrs(m[1]).id === selector.slice(1);
  });
  if (!found) return null;
  const a = attrs(found[1]);
  const fields = {};
  for (const m of found[2].matchAll(/<input\b([^>]*)>/gi)) {
    const i = attrs(m[1]);
    if (i.name) fields[i.name] = i.value ?? '';
  }
  return {
    id: a.id,
    action: new URL(a.action || pageUrl, pageUrl).href,
    method: (a.method || 'get').toUpperCase(),
    fields,
  };
}

/**
 * The links (<a href>) of an HTML page: [{ href (absolute), text }].
 */
export function parseLinks(html, pageUrl) {
  return [...html.matchAll(/<a\b([^>]*)>([\s\S]*?)<\/a>/gi)]
    .map((m) => ({ a: attrs(m[1]), text: decodeEntities(m[2].replace(/<[^>]*>/g, '')).trim() }))
    .filter(({ a }) => a.href !== undefined)
    .map(({ a, text }) => ({ href: new URL(a.href, pageUrl).href, text }));
}

/**
 * A user agent: fetch with a cookie jar and redirects followed by hand, one
 * hop at a time, as long as they stay on castellan's origin (or on one of
 * `also`: other servers the browser walks through, e.g. an upstream CAS
 * server of delegated authentication). The first redirect that leaves them
 * (to the relying party) is not followed: its Location is the authorization
 * (or logout) response.
 *
 * The cookie jar is one per host name, like a browser's: cookies ignore
 * ports (RFC 6265 §8.5), so servers on 127.0.0.1 share it.
 */
export class Browser {
  /** `also`: more servers (castellan handles or origins / URLs) whose redirects are followed. */
  constructor(cas, { also = [] } = {}) {
    this.cas = cas;
    this.origin = new URL(cas.base).origin;
    /** Origins whose redirects are followed (castellan's first). */
    this.origins = new Set([this.origin, ...also.map((x) => new URL(typeof x === 'string' ? x : x.base).origin)]);
    for (const o of this.origins) {
      if (new URL(o).hostname !== new URL(this.origin).hostname) {
        throw new Error(`Browser: one cookie jar for ${new URL(this.origin).hostname} only, not ${o}`);
      }
    }
    /** name -> { value, path } for castellan's host (cookies ignore ports). */
    this.cookies = new Map();
    /** Every request/response of the last `visit` (for failure messages). */
    this.hops = [];
  }

  cookie(name) { return this.cookies.get(name); }

  cookieHeader(url) {
    const u = new URL(url);
    if (u.hostname !== new URL(this.origin).hostname) return null;
    const pairs = [];
    for (const [name, c] of this.cookies) {
      const p = c.path || '/';
      if (u.pathname === p || u.pathname.startsWith(p.endsWith('/') ? p : `${p}/`)) pairs.push(`${name}=${c.value}`);
    }
    return pairs.length ? pairs.join('; ') : null;
  }

  storeCookies(url, response) {
    for (const sc of response.headers.getSetCookie()) {
      const [pair, ...avs] = sc.split(';');
      const eq = pair.indexOf('=');
      if (eq < 1) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const c = { value, path: null, expired: false };
      for (const av of avs) {
        const [k, ...rest] = av.split('=');
        const key = k.trim().toLowerCase();
        const v = rest.join('=').trim();
        if (key === 'path') c.path = v;
        if (key === 'max-age' && Number(v) <= 0) c.expired = true;
        if (key === 'expires' && Date.parse(v) <= Date.now()) c.expired = true;
      }
      if (!c.path) {
        // default-path (RFC 6265 §5.1.4)
        const p = new URL(url).pathname;
        c.path = p.lastIndexOf('/') > 0 ? p.slice(0, p.lastIndexOf('/')) : '/';
      }
      if (c.expired || value === '') this.cookies.delete(name);
      else this.cookies.set(name, { value, path: c.path });
    }
  }

  /** One request, no redirect following; returns { status, headers, location, body, url }. */
  async request(url, { method = 'GET', form = null, headers = {} } = {}) {
    const h = { 'User-Agent': 'castellan-oidc-client-tests', ...headers };
    const ck = this.cookieHeader(url);
    if (ck) h.Cookie = ck;
    let body;
    if (form) {
      body = new URLSearchParams(form).toString();
      h['Content-Type'] = 'application/x-www-form-urlencoded';
    }
    const r = await fetch(url, { method, headers: h, body, redirect: 'manual' });
    this.storeCookies(url, r);
    const text = await r.text();
    const loc = r.headers.get('location');
    const res = {
      url,
      method,
      status: r.status,
      headers: r.headers,
      location: loc ? new URL(loc, url).href : null,
      body: text,
    };
    this.hops.push({ method, url, status: r.status, location: res.location });
    return res;
  }

  /**
   * GETs `url` and follows redirects on castellan's origin (and the `also`
   * origins). When the CAS login form (form#fm1) is shown and `follow` is
   * given, the first time GETs the page's first link whose href matches it
   * (a string it contains, or a RegExp), e.g. 'client_name=campus' to sign
   * in at an upstream instead. Otherwise, when `login` is given, fills the
   * form in and POSTs it to its action (once). Stops at the first redirect
   * off those origins or at a page (non-redirect) that is not a login form
   * to fill. Returns { location (off-origin redirect target, or null),
   * final (last response), loginForms, followed (the link followed, or null) }.
   */
  async visit(url, { login = null, follow = null, method = 'GET', form = null, maxHops = 15 } = {}) {
    this.hops = [];
    let res = await this.request(url, { method, form });
    let loginForms = 0;
    let followed = null;
    for (let i = 0; i < maxHops; i += 1) {
      if (res.status >= 300 && res.status < 400 && res.location) {
        if (!this.origins.has(new URL(res.location).origin)) return { location: res.location, final: res, loginForms, followed };
        res = await this.request(res.location);
        continue;
      }
      const fm1 = res.status === 200 ? parseForm(res.body, res.url, '#fm1') : null;
      if (fm1 && follow && !followed) {
        const links = parseLinks(res.body, res.url);
        const link = links.find((l) => (follow instanceof RegExp ? follow.test(l.href) : l.href.includes(follow)));
        if (!link) {
          throw new Error(`no link matching ${follow} on the login page ${res.url}: ${JSON.stringify(links)}\n${this.trace()}`);
        }
        followed = link;
        res = await this.request(link.href);
        continue;
      }
      if (fm1 && login && loginForms === 0) {
        loginForms += 1;
        assertDefined(fm1.fields.execution, `login form without an execution field at ${res.url}`);
        res = await this.request(fm1.action, {
          method: 'POST',
          form: { username: login.username, password: login.password, execution: fm1.fields.execution, submit: 'login' },
        });
        continue;
      }
      return { location: null, final: res, loginForms: loginForms + (fm1 ? 1 : 0), loginForm: fm1, followed };
    }
    throw new Error(`more than ${maxHops} redirects:\n${this.trace()}`);
  }

  trace() {
    return this.hops.map((h) => `  ${h.method} ${h.url} -> ${h.status}${h.location ? ` Location: ${h.location}` : ''}`).join('\n');
  }
}

function assertDefined(v, msg) {
  if (v === undefined || v === null || v === '') throw new Error(msg);
}

// ------------------------------------------------------------------ helpers

/** base64url without padding of a buffer. */
export const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** The decoded header and payload of a compact JWS (no verification). */
export function decodeJwt(jwt) {
  const [h, p] = String(jwt).split('.');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url').toString('utf8')),
    payload: JSON.parse(Buffer.from(p, 'base64url').toString('utf8')),
  };
}

/**
 * OpenID Connect Core §3.1.3.6 at_hash: base64url of the left-most half of
 * the hash of the access token's ASCII octets, the hash being the one of the
 * ID token's JWS alg (SHA-256 for RS256/ES256/PS256).
 */
export async function atHash(accessToken, alg) {
  const bits = { 256: 'SHA-256', 384: 'SHA-384', 512: 'SHA-512' }[alg.slice(-3)];
  if (!bits) throw new Error(`no at_hash hash for alg ${alg}`);
  const digest = new Uint8Array(await crypto.subtle.digest(bits, new TextEncoder().encode(accessToken)));
  return b64url(digest.slice(0, digest.length / 2));
}

/** Calls `fn`, expects it to reject; returns the error (fails with `msg` otherwise). */
export async function rejects(fn, msg) {
  try {
    const v = await fn();
    throw Object.assign(new Error(`${msg}: expected an error, got ${JSON.stringify(v)?.slice(0, 500)}`), { notRejected: true });
  } catch (e) {
    if (e?.notRejected) throw e;
    return e;
  }
}

/** A short description of an openid-client / oauth4webapi error for assertion messages. */
export function describeError(e) {
  if (!e) return String(e);
  const parts = [`${e.name}: ${e.message}`];
  if (e.code) parts.push(`code=${e.code}`);
  if (e.error) parts.push(`error=${e.error}`);
  if (e.error_description) parts.push(`error_description=${e.error_description}`);
  if (e.status) parts.push(`status=${e.status}`);
  if (e.cause && !(e.cause instanceof Error)) {
    try { parts.push(`cause=${JSON.stringify(e.cause instanceof URLSearchParams ? Object.fromEntries(e.cause) : e.cause).slice(0, 500)}`); } catch { /* */ }
  } else if (e.cause) {
    parts.push(`cause=${e.cause.message}`);
  }
  return parts.join(' ');
}

/** A raw POST of a form (for checks of status codes and headers the library hides). */
export async function postForm(url, form, { basic = null, headers = {} } = {}) {
  const h = { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json', ...headers };
  if (basic) {
    // RFC 6749 §2.3.1: form-urlencode id and secret, then Base64
    const enc = (s) => encodeURIComponent(s).replace(/%20/g, '+');
    h.Authorization = `Basic ${Buffer.from(`${enc(basic[0])}:${enc(basic[1])}`).toString('base64')}`;
  }
  const r = await fetch(url, { method: 'POST', headers: h, body: new URLSearchParams(form).toString(), redirect: 'manual' });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, text, json };
}

/**
 * The authorization request in the browser: GET `url`, log in if the form
 * is shown, and return the authorization response (the Location of the first
 * redirect to the relying party) as a URL. Fails with the redirect trace when
 * the browser does not end up at `redirectUri`.
 */
export async function authorize(browser, url, { login = USER, redirectUri, follow = null } = {}) {
  const v = await browser.visit(url, { login, follow });
  if (!v.location) {
    throw new Error(`the authorization request did not redirect to the relying party; last response ${v.final.status}:\n`
      + `${browser.trace()}\n  body: ${v.final.body.slice(0, 400)}`);
  }
  const loc = new URL(v.location);
  if (redirectUri && `${loc.origin}${loc.pathname}` !== redirectUri) {
    throw new Error(`redirected to ${v.location}, not to ${redirectUri}:\n${browser.trace()}`);
  }
  return { response: loc, loginForms: v.loginForms, hops: [...browser.hops], followed: v.followed };
}

/**
 * A whole authorization code flow with PKCE, state and nonce for `config`:
 * authorization request, login, authorizationCodeGrant (which validates
 * state, iss, the ID token's iss/aud/exp/iat/nonce/azp...).
 */
export async function codeFlow(browser, config, { redirectUri, params = {}, login = USER, follow = null } = {}) {
  const req = await authorizationRequest(config, { redirect_uri: redirectUri, ...params });
  const { response, loginForms, hops, followed } = await authorize(browser, req.url, { login, redirectUri, follow });
  const tokens = await client.authorizationCodeGrant(config, response, {
    pkceCodeVerifier: req.codeVerifier,
    expectedState: req.state,
    expectedNonce: req.nonce,
    idTokenExpected: /\bopenid\b/.test(req.params.scope),
    maxAge: req.params.max_age !== undefined ? Number(req.params.max_age) : undefined,
  });
  return { tokens, req, response, loginForms, hops, followed };
}
