// Harness of the browser tests: a real castellan process, a tiny CAS client
// application (Node HTTP server) and Debian's Chromium driven by playwright-core.
//
// Everything listens on 127.0.0.1 only, on ports picked free at start.

import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const BROWSER_DIR = path.resolve(here, '..');
export const REPO = path.resolve(BROWSER_DIR, '..', '..');
export const OUT = path.join(BROWSER_DIR, '.out');
export const BINARY = process.env.CASTELLAN_BIN || path.join(REPO, 'target', 'release', 'castellan');
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

export const USERS = {
  casuser: { username: 'casuser', password: 'Mellon' },
  // its own throttling budget, so that the throttling test blocks nobody else
  bob: { username: 'bob', password: 'Builder-77' },
};

fs.mkdirSync(OUT, { recursive: true });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

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

// ------------------------------------------------------------------ castellan

const children = new Set();
// process groups (Apache: the parent and its prefork children)
const groups = new Set();
process.on('exit', () => {
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch { /* already gone */ }
  }
  for (const pgid of groups) {
    try { process.kill(-pgid, 'SIGKILL'); } catch { /* already gone */ }
  }
});

/**
 * `services`: more TOML appended to the config (e.g. [[services]] entries of
 * OIDC clients); `logName`: the log's file name in .out/ (one per test file).
 */
export async function startCastellan({ port, appPort, services = '', logName = 'castellan.log' }) {
  if (!fs.existsSync(BINARY)) {
    throw new Error(`castellan binary not found at ${BINARY} (run cargo build --release)`);
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'castellan-browser-'));
  const config = `
[server]
listen = "127.0.0.1:${port}"
public_url = "http://127.0.0.1:${port}/cas"
data_dir = "${path.join(tmp, 'data')}"

[throttle]
failures_per_user = 3

[[users]]
username = "casuser"
password = "Mellon"
attributes = { mail = "casuser@example.org", cn = "CAS User" }

[[users]]
username = "bob"
password = "Builder-77"
attributes = { mail = "bob@example.org", cn = "Bob" }

[[services]]
name = "demo-app"
protocol = "cas"
service = '^http://127\\.0\\.0\\.1:${appPort}/.*$'
release = ["mail", "cn"]
${services}`;
  const configPath = path.join(tmp, 'castellan.toml');
  fs.writeFileSync(configPath, config);
  const logPath = path.join(OUT, logName);
  const log = fs.openSync(logPath, 'w');
  const child = spawn(BINARY, ['serve', '--config', configPath], {
    stdio: ['ignore', log, log],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
  });
  fs.closeSync(log);
  children.add(child);
  let exited = null;
  child.on('exit', (code, signal) => { exited = { code, signal }; children.delete(child); });

  const base = `http://127.0.0.1:${port}/cas`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) {
      throw new Error(`castellan exited at start (${JSON.stringify(exited)}):\n${tail(logPath)}`);
    }
    try {
      const r = await fetch(`${base}/health`);
      if (r.status === 200) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`castellan not healthy after 30 s:\n${tail(logPath)}`);
    }
    await sleep(100);
  }

  return {
    base,
    origin: `http://127.0.0.1:${port}`,
    logPath,
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

function tail(file, n = 40) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-n).join('\n');
  } catch {
    return '(no log)';
  }
}

// ------------------------------------------------------------- the application

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/**
 * A CAS client application at http://127.0.0.1:PORT/app/:
 *  - GET /app/<anything> without a ticket: 302 to CAS login with service=<this URL>;
 *  - GET with ?ticket=: records it, validates it against /p3/serviceValidate
 *    (format=JSON) and shows the user (#user) and attributes;
 *  - POST with a form field `ticket` (method=POST responses): the same.
 * Every received ticket is kept in `app.received` ({method, path, ticket, user}).
 *
 * And an OAuth2/OIDC redirect_uri recorder at http://127.0.0.1:PORT/rp/...:
 * every request (GET or POST) is kept in `app.rp` ({method, path, query,
 * body, contentType}: query and a urlencoded body as plain objects) and
 * answered with a page listing the parameters (#rp-method, #p-<name>).
 */
export async function startApp({ port, casBase }) {
  const app = {
    origin: `http://127.0.0.1:${port}`,
    received: [],
    hits: [],
    rp: [],
    url(p = '/app/') { return `${this.origin}${p}`; },
  };

  const page = (status, title, body) => [status, `<!doctype html><html lang="en"><head><meta charset="utf-8">
<link rel="icon" href="data:,"><title>${escapeHtml(title)}</title></head><body><h1>${escapeHtml(title)}</h1>${body}</body></html>`];

  async function validate(service, ticket) {
    const u = new URL(`${casBase}/p3/serviceValidate`);
    u.searchParams.set('service', service);
    u.searchParams.set('ticket', ticket);
    u.searchParams.set('format', 'JSON');
    const r = await fetch(u);
    const text = await r.text();
    let json;
    try { json = JSON.parse(text); } catch { return { error: `not JSON (${r.status}): ${text.slice(0, 300)}` }; }
    const ok = json?.serviceResponse?.authenticationSuccess;
    if (ok) return { user: ok.user, attributes: ok.attributes || {} };
    const fail = json?.serviceResponse?.authenticationFailure;
    return { error: `${fail?.code || 'no authenticationSuccess'}: ${fail?.description || text.slice(0, 300)}` };
  }

  async function recordRp(req, url) {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const raw = Buffer.concat(chunks).toString('utf8');
    const contentType = req.headers['content-type'] || null;
    const body = req.method === 'POST' && /^application\/x-www-form-urlencoded\b/.test(contentType || '')
      ? Object.fromEntries(new URLSearchParams(raw))
      : (raw ? { raw } : null);
    const query = Object.fromEntries(url.searchParams);
    app.rp.push({ method: req.method, path: url.pathname, query, body, contentType });
    const params = { ...query, ...(body && !body.raw ? body : {}) };
    const items = Object.entries(params)
      .map(([k, v]) => `<li>${escapeHtml(k)}: <span id="p-${escapeHtml(k)}">${escapeHtml(v)}</span></li>`)
      .join('');
    return page(200, 'Relying party', `<p>Received by <span id="rp-method">${escapeHtml(req.method)}</span></p><ul>${items}</ul>`);
  }

  async function handle(req, res) {
    const url = new URL(req.url, app.origin);
    if (url.pathname.startsWith('/rp/')) return recordRp(req, url);
    if (!url.pathname.startsWith('/app/')) return [404, '']; // favicon.ico and such: not protected
    app.hits.push({ method: req.method, url: url.href });
    let ticket = null;
    if (req.method === 'POST') {
      const chunks = [];
      for await (const c of req) chunks.push(c);
      ticket = new URLSearchParams(Buffer.concat(chunks).toString('utf8')).get('ticket');
    } else {
      ticket = url.searchParams.get('ticket');
    }
    url.searchParams.delete('ticket');
    const service = url.href;

    if (!ticket) {
      if (req.method !== 'GET') return page(400, 'No ticket', '<p id="error">POST without a ticket</p>');
      const login = new URL(`${casBase}/login`);
      login.searchParams.set('service', service);
      if (url.pathname.startsWith('/app/post')) login.searchParams.set('method', 'POST');
      res.setHeader('Location', login.href);
      return [302, ''];
    }

    const entry = { method: req.method, path: url.pathname, ticket, user: null, error: null };
    app.received.push(entry);
    const v = await validate(service, ticket);
    if (v.error) {
      entry.error = v.error;
      return page(401, 'Ticket refused', `<p id="error">${escapeHtml(v.error)}</p>`);
    }
    entry.user = v.user;
    const attrs = Object.entries(v.attributes)
      .map(([k, val]) => `<li><span class="name">${escapeHtml(k)}</span>: <span id="attr-${escapeHtml(k)}">${escapeHtml([].concat(val).join(', '))}</span></li>`)
      .join('');
    return page(200, 'Demo application', `<p>Welcome, <strong id="user">${escapeHtml(v.user)}</strong></p>
<p>Ticket received by <span id="method">${escapeHtml(req.method)}</span></p><ul>${attrs}</ul>`);
  }

  const server = http.createServer((req, res) => {
    handle(req, res).then(([status, body]) => {
      res.statusCode = status;
      if (body) res.setHeader('Content-Type', 'text/html; charset=utf-8');
      res.setHeader('Cache-Control', 'no-store');
      res.end(body);
    }, (err) => {
      res.statusCode = 500;
      res.end(String(err?.stack || err));
    });
  });
  await new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  app.stop = () => new Promise((resolve) => {
    server.closeAllConnections?.();
    server.close(() => resolve());
  });
  return app;
}

// ------------------------------------------------- Apache with mod_auth_openidc

export const APACHE_BIN = '/usr/sbin/apache2';
export const APACHE_MODULES = '/usr/lib/apache2/modules';

const OIDC_ENV_CGI = `#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
echo "REMOTE_USER=$REMOTE_USER"
env | grep '^OIDC_CLAIM_' | sort
`;

/**
 * The relying party of tests/e2e/conftest.py's ApacheOidc, started from Node:
 * our own Apache httpd (own ServerRoot, config, pid file and logs in a temp
 * dir; prefork, children as www-data, in the foreground, in a process group
 * of its own) with mod_auth_openidc (Debian's libapache2-mod-auth-openidc).
 * On http://127.0.0.1:PORT/ it serves:
 *   /secured/env.cgi       AuthType openid-connect; prints REMOTE_USER and the
 *                          OIDC_CLAIM_* variables, one per line (text/plain)
 *   /secured/redirect_uri  mod_auth_openidc's redirect URI (also its
 *                          back-channel logout endpoint: ?logout=backchannel)
 *   /loggedout.html        where its logout sends the browser in the end
 * `apacheOidcService(port, ...)` is the Castellan [[services]] entry for it.
 */
export const APACHE_OIDC = {
  clientId: 'apache-oidc',
  clientSecret: 'apache-oidc-secret-0123456789',
};

export function apacheOidcUrls(port) {
  const base = `http://127.0.0.1:${port}`;
  return {
    base,
    redirectUri: `${base}/secured/redirect_uri`,
    loggedOutUrl: `${base}/loggedout.html`,
    backchannelLogoutUri: `${base}/secured/redirect_uri?logout=backchannel`,
  };
}

const tomlString = (v) => JSON.stringify(String(v));
const tomlList = (vs) => `[${vs.map(tomlString).join(', ')}]`;

/** The [[services]] TOML of the Apache's client; `name` is shown on the login page. */
export function apacheOidcService(port, { name = 'apache-oidc' } = {}) {
  const u = apacheOidcUrls(port);
  return `
[[services]]
name = ${tomlString(name)}
protocol = "oidc"
client_id = ${tomlString(APACHE_OIDC.clientId)}
client_secret = ${tomlString(APACHE_OIDC.clientSecret)}
redirect_uris = ${tomlList([u.redirectUri])}
post_logout_redirect_uris = ${tomlList([u.loggedOutUrl])}
scopes = ["openid", "profile", "email"]
release = ["mail", "cn"]
backchannel_logout_uri = ${tomlString(u.backchannelLogoutUri)}
`;
}

export function apacheOidcAvailable() {
  if (!fs.existsSync(APACHE_BIN)) return `${APACHE_BIN} missing (apt-get install apache2)`;
  if (!fs.existsSync(path.join(APACHE_MODULES, 'mod_auth_openidc.so'))) {
    return 'mod_auth_openidc missing (apt-get install libapache2-mod-auth-openidc)';
  }
  return null;
}

export async function startApacheOidc({ port, casBase }) {
  const missing = apacheOidcAvailable();
  if (missing) throw new Error(missing); // run.sh installs it: missing is a failure, not a skip
  const u = apacheOidcUrls(port);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'castellan-browser-apache-oidc-'));
  fs.chmodSync(root, 0o755);
  for (const d of ['logs', 'run', 'htdocs/secured']) {
    fs.mkdirSync(path.join(root, d), { recursive: true });
  }
  for (const d of ['logs', 'run', 'htdocs', 'htdocs/secured']) fs.chmodSync(path.join(root, d), 0o755);
  fs.writeFileSync(path.join(root, 'htdocs/secured/env.cgi'), OIDC_ENV_CGI, { mode: 0o755 });
  fs.chmodSync(path.join(root, 'htdocs/secured/env.cgi'), 0o755);
  fs.writeFileSync(path.join(root, 'htdocs/index.html'), 'apache up\n');
  fs.writeFileSync(path.join(root, 'htdocs/loggedout.html'),
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Logged out</title></head>'
    + '<body><h1>Logged out</h1><p id="loggedout">logged out of apache</p></body></html>\n');
  // Chromium asks for /favicon.ico on the text/plain CGI page: not a 404 in the console
  fs.writeFileSync(path.join(root, 'htdocs/favicon.ico'), '');
  const logPath = path.join(root, 'logs', 'error.log');
  const mods = ['mpm_prefork', 'authn_core', 'authz_core', 'authz_user', 'auth_openidc', 'cgi', 'mime', 'dir'];
  const conf = `# generated by tests/browser/lib/harness.mjs (startApacheOidc), after tests/e2e/conftest.py ApacheOidc
ServerRoot "${root}"
ServerName 127.0.0.1:${port}
Listen 127.0.0.1:${port}
PidFile "${root}/run/httpd.pid"
DefaultRuntimeDir "${root}/run"
Mutex file:${root}/run default
ErrorLog "${logPath}"
LogLevel warn auth_openidc:debug
LogFormat "%h %l %u %t \\"%r\\" %>s %b" common
CustomLog "${root}/logs/access.log" common
User www-data
Group www-data
${mods.map((m) => `LoadModule ${m}_module ${APACHE_MODULES}/mod_${m}.so`).join('\n')}
StartServers 3
MinSpareServers 2
MaxSpareServers 6
MaxRequestWorkers 16
Timeout 30
TypesConfig /dev/null

OIDCProviderMetadataURL ${casBase}/oidc/.well-known/openid-configuration
OIDCClientID ${APACHE_OIDC.clientId}
OIDCClientSecret ${APACHE_OIDC.clientSecret}
OIDCRedirectURI ${u.redirectUri}
OIDCCryptoPassphrase "${crypto.randomBytes(16).toString('hex')}"
OIDCScope "openid email profile"
OIDCResponseType code
OIDCPKCEMethod S256
OIDCRemoteUserClaim preferred_username
OIDCPassClaimsAs environment
OIDCClaimPrefix OIDC_CLAIM_
OIDCSessionType server-cache
OIDCCacheType shm
OIDCHTTPTimeoutShort 10
OIDCHTTPTimeoutLong 20
OIDCDefaultLoggedOutURL ${u.loggedOutUrl}

DocumentRoot "${root}/htdocs"
<Directory "${root}/htdocs">
    Require all granted
</Directory>
<Location "/secured/">
    AuthType openid-connect
    Require valid-user
</Location>
<Directory "${root}/htdocs/secured">
    Options +ExecCGI
    <Files "env.cgi">
        SetHandler cgi-script
    </Files>
</Directory>
`;
  const confPath = path.join(root, 'httpd.conf');
  fs.writeFileSync(confPath, conf);
  const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C' };
  const check = spawnSync(APACHE_BIN, ['-d', root, '-f', confPath, '-t'], { encoding: 'utf8', env });
  if (check.status !== 0) {
    throw new Error(`apache config test failed:\n${check.stdout}${check.stderr}\n${conf}`);
  }

  const out = fs.openSync(path.join(root, 'logs', 'stdout.log'), 'a');
  const child = spawn(APACHE_BIN, ['-d', root, '-f', confPath, '-DFOREGROUND'], {
    stdio: ['ignore', out, out], env, detached: true,
  });
  fs.closeSync(out);
  groups.add(child.pid);
  let exited = null;
  child.on('exit', (code, signal) => { exited = { code, signal }; });

  const logTail = (n = 60) => `${tail(logPath, n)}\n--- access log ---\n${tail(path.join(root, 'logs', 'access.log'), 30)}`
    + `\n--- stdout ---\n${tail(path.join(root, 'logs', 'stdout.log'), 20)}`;
  const killGroup = (sig) => { try { process.kill(-child.pid, sig); } catch { /* gone */ } };
  async function stop() {
    if (!exited) {
      child.kill('SIGTERM'); // the parent stops its children
      const until = Date.now() + 15_000;
      while (!exited && Date.now() < until) await sleep(50);
    }
    killGroup('SIGKILL'); // whatever is left of the group
    groups.delete(child.pid);
    for (const [from, to] of [['logs/error.log', 'apache-oidc-error.log'], ['logs/access.log', 'apache-oidc-access.log']]) {
      try { fs.copyFileSync(path.join(root, from), path.join(OUT, to)); } catch { /* no log */ }
    }
    if (!process.env.KEEP_BROWSER_TMP) fs.rmSync(root, { recursive: true, force: true });
    return exited;
  }

  const deadline = Date.now() + 20_000;
  for (;;) {
    if (exited) {
      await stop();
      throw new Error(`apache exited at start (${JSON.stringify(exited)}):\n${logTail()}`);
    }
    try {
      const r = await fetch(`${u.base}/index.html`);
      if (r.status === 200) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`apache not up after 20 s:\n${logTail()}`);
    }
    await sleep(100);
  }
  return { ...u, root, logPath, logTail, stop,
    accessLog: () => fs.readFileSync(path.join(root, 'logs', 'access.log'), 'utf8') };
}

// ------------------------------------------------------------------ the browser

export const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--hide-scrollbars',
  '--mute-audio',
];

/**
 * Launches Debian's Chromium. playwright-core gives it a fresh temporary
 * --user-data-dir of its own (removed on close); it refuses one in `args`.
 * `headless: false` keeps it from adding the plain `--headless`: the mode is
 * set by `--headless=new` above.
 */
export async function launchBrowser() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: apt-get install -y chromium`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: false,
    args: CHROMIUM_ARGS,
    timeout: 60_000,
  });
}

/**
 * Records what a careful person would call a problem on a page: console
 * errors, uncaught exceptions and CSP violations (reported by the page itself
 * through `securitypolicyviolation`, and by Chromium's console).
 */
export async function watchProblems(context) {
  const problems = [];
  await context.exposeBinding('__reportCspViolation', (_src, v) => {
    problems.push({ kind: 'csp', text: `CSP violation: ${v.directive} blocked ${v.blocked} on ${v.url}` });
  }).catch(() => { /* javaScriptEnabled: false */ });
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      // eslint-disable-next-line no-undef
      window.__reportCspViolation?.({ directive: e.effectiveDirective, blocked: e.blockedURI, url: e.documentURI });
    });
  });
  const watchPage = (page) => {
    page.on('console', (msg) => {
      if (msg.type() === 'error' || (msg.type() === 'warning' && /Content.Security.Policy/i.test(msg.text()))) {
        problems.push({ kind: 'console', text: msg.text(), url: msg.location()?.url || '' });
      }
    });
    page.on('pageerror', (err) => problems.push({ kind: 'pageerror', text: String(err) }));
  };
  context.pages().forEach(watchPage);
  context.on('page', watchPage);
  return problems;
}

/**
 * Problems other than Chromium's note on a main-document error status (a 401
 * page for a wrong password, a 400 page for a bad OIDC request are intended): "Failed to load resource: the server
 * responded with a status of 401" whose URL is a page that was navigated to.
 */
export function realProblems(problems, documentUrls = []) {
  return problems.filter((p) => !(
    p.kind === 'console'
    && /^Failed to load resource: the server responded with a status of (400|401|403|429)\b/.test(p.text)
    && documentUrls.some((u) => p.url === u)
  ));
}

export async function noHorizontalScroll(page) {
  return page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
  }));
}

export function shot(page, name) {
  return page.screenshot({ path: path.join(OUT, `${name}.png`), fullPage: true, animations: 'disabled' });
}
