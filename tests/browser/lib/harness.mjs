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
 * OIDC clients, [[upstreams]] of delegated authentication); `logName`: the
 * log's file name in .out/ (one per test file); `host`: the host name of the
 * public_url (default 127.0.0.1; "localhost" gives a second Castellan a site
 * and a cookie jar of its own: cookies ignore the port). It always listens on
 * 127.0.0.1.
 */
export async function startCastellan({ port, appPort, services = '', logName = 'castellan.log', host = '127.0.0.1' }) {
  if (!fs.existsSync(BINARY)) {
    throw new Error(`castellan binary not found at ${BINARY} (run cargo build --release)`);
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'castellan-browser-'));
  const config = `
[server]
listen = "127.0.0.1:${port}"
public_url = "http://${host}:${port}/cas"
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

  const local = `http://127.0.0.1:${port}/cas`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) {
      throw new Error(`castellan exited at start (${JSON.stringify(exited)}):\n${tail(logPath)}`);
    }
    try {
      const r = await fetch(`${local}/health`);
      if (r.status === 200) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`castellan not healthy after 30 s:\n${tail(logPath)}`);
    }
    await sleep(100);
  }

  return {
    base: `http://${host}:${port}/cas`,
    origin: `http://${host}:${port}`,
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

// ------------------------------------- Shibboleth SP: Apache + mod_shib + shibd

export const SHIBD_BIN = '/usr/sbin/shibd';
export const MOD_SHIB = path.join(APACHE_MODULES, 'mod_shib.so');
const SHIB_ETC = '/etc/shibboleth'; // Debian's defaults: protocols.xml, security-policy.xml, templates

export const SAML_NS = {
  samlp: 'urn:oasis:names:tc:SAML:2.0:protocol',
  saml: 'urn:oasis:names:tc:SAML:2.0:assertion',
  md: 'urn:oasis:names:tc:SAML:2.0:metadata',
  ds: 'http://www.w3.org/2000/09/xmldsig#',
};
export const SAML_BINDING = {
  redirect: 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect',
  post: 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST',
  soap: 'urn:oasis:names:tc:SAML:2.0:bindings:SOAP',
};
export const NAMEID_PERSISTENT = 'urn:oasis:names:tc:SAML:2.0:nameid-format:persistent';
const NAMEID_TRANSIENT = 'urn:oasis:names:tc:SAML:2.0:nameid-format:transient';
const NAMEID_EMAIL = 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress';
const OID_MAIL = 'urn:oid:0.9.2342.19200300.100.1.3';
const OID_CN = 'urn:oid:2.5.4.3';
const OID_MEMBER_OF = 'urn:oid:1.3.6.1.4.1.5923.1.5.1.1';

export function shibbolethAvailable() {
  if (!fs.existsSync(APACHE_BIN)) return `${APACHE_BIN} missing (apt-get install apache2)`;
  if (!fs.existsSync(MOD_SHIB)) return `${MOD_SHIB} missing (apt-get install libapache2-mod-shib)`;
  if (!fs.existsSync(SHIBD_BIN)) return `${SHIBD_BIN} missing (apt-get install shibboleth-sp-utils)`;
  for (const f of ['protocols.xml', 'security-policy.xml', 'sessionError.html']) {
    if (!fs.existsSync(path.join(SHIB_ETC, f))) return `${SHIB_ETC}/${f} missing (apt-get install shibboleth-sp-common)`;
  }
  if (spawnSync('openssl', ['version']).status !== 0) return 'openssl missing (apt-get install openssl)';
  return null;
}

/**
 * An RSA-2048 key (PKCS#8 PEM, from openssl 3) and a self-signed certificate;
 * returns the certificate's base64 DER (for ds:X509Certificate).
 */
export function makeRsaCredential(keyPath, certPath, cn, days = 30) {
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256',
    '-keyout', keyPath, '-out', certPath, '-days', String(days), '-subj', `/CN=${cn.replace(/[/=]/g, '_')}`],
  { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl req failed (${r.status}): ${r.stderr}`);
  fs.chmodSync(keyPath, 0o600);
  fs.chmodSync(certPath, 0o644);
  return new crypto.X509Certificate(fs.readFileSync(certPath)).raw.toString('base64');
}

const SHIB_ENV_CGI = `#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
echo "REMOTE_USER=$REMOTE_USER"
echo "AUTH_TYPE=$AUTH_TYPE"
env | grep -v -E '^(REMOTE_USER|AUTH_TYPE)=' | sort
`;

const SHIB_ATTRIBUTE_MAP = `<Attributes xmlns="urn:mace:shibboleth:2.0:attribute-map"
            xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
    <!-- NameFormat uri (the default of Attribute/@nameFormat here) -->
    <Attribute name="${OID_MAIL}" id="mail"/>
    <Attribute name="${OID_CN}" id="cn"/>
    <Attribute name="${OID_MEMBER_OF}" id="memberOf"/>
    <!-- NameIDs -->
    <Attribute name="${NAMEID_PERSISTENT}" id="persistent-id">
        <AttributeDecoder xsi:type="NameIDAttributeDecoder" formatter="$NameQualifier!$SPNameQualifier!$Name"
                          defaultQualifiers="true"/>
    </Attribute>
    <Attribute name="${NAMEID_TRANSIENT}" id="transient-id">
        <AttributeDecoder xsi:type="NameIDAttributeDecoder" formatter="$Name"/>
    </Attribute>
    <Attribute name="${NAMEID_EMAIL}" id="nameid-email">
        <AttributeDecoder xsi:type="NameIDAttributeDecoder" formatter="$Name"/>
    </Attribute>
</Attributes>
`;

const shibdLogger = (logs) => `log4j.rootCategory=INFO, shibd_log
log4j.category.XMLTooling.XMLObject=INFO
log4j.category.XMLTooling.XMLObjectBuilder=INFO
log4j.category.XMLTooling.KeyInfoResolver=INFO
log4j.category.Shibboleth.IPRange=INFO
log4j.category.Shibboleth.PropertySet=INFO
log4j.category.XMLTooling.libcurl=INFO
# what a failure report needs: messages, policy rules, SSO and logout handlers
log4j.category.OpenSAML.MessageDecoder=DEBUG
log4j.category.OpenSAML.MessageEncoder=DEBUG
log4j.category.OpenSAML.SecurityPolicyRule=DEBUG
log4j.category.OpenSAML.SecurityPolicy=DEBUG
log4j.category.XMLTooling.SOAPClient=DEBUG
log4j.category.Shibboleth.SSO=DEBUG
log4j.category.Shibboleth.Logout=DEBUG
log4j.category.Shibboleth.SessionCache=DEBUG
log4j.category.Shibboleth.AttributeExtractor=DEBUG
log4j.category.Shibboleth.MetadataProvider=DEBUG
log4j.category.OpenSAML.MetadataProvider=DEBUG

log4j.category.XMLTooling.Signature.Debugger=INFO, sig_log
log4j.additivity.XMLTooling.Signature.Debugger=false
log4j.ownAppenders.XMLTooling.Signature.Debugger=true

log4j.category.Shibboleth-TRANSACTION=INFO, tran_log
log4j.additivity.Shibboleth-TRANSACTION=false
log4j.ownAppenders.Shibboleth-TRANSACTION=true

log4j.appender.shibd_log=org.apache.log4j.FileAppender
log4j.appender.shibd_log.fileName=${logs}/shibd.log
log4j.appender.shibd_log.layout=org.apache.log4j.PatternLayout
log4j.appender.shibd_log.layout.ConversionPattern=%d{%Y-%m-%d %H:%M:%S} %p %c %x: %m%n

log4j.appender.tran_log=org.apache.log4j.FileAppender
log4j.appender.tran_log.fileName=${logs}/transaction.log
log4j.appender.tran_log.layout=org.apache.log4j.PatternLayout
log4j.appender.tran_log.layout.ConversionPattern=%d{%Y-%m-%d %H:%M:%S}|%c|%m%n

log4j.appender.sig_log=org.apache.log4j.FileAppender
log4j.appender.sig_log.fileName=${logs}/signature.log
log4j.appender.sig_log.layout=org.apache.log4j.PatternLayout
log4j.appender.sig_log.layout.ConversionPattern=%m
`;

const nativeLogger = (logs) => `log4j.rootCategory=INFO, native_log
log4j.category.XMLTooling.XMLObject=WARN
log4j.category.XMLTooling.XMLObjectBuilder=WARN
log4j.category.XMLTooling.KeyInfoResolver=WARN
log4j.category.Shibboleth.IPRange=WARN
log4j.category.Shibboleth.PropertySet=WARN
log4j.appender.native_log=org.apache.log4j.FileAppender
log4j.appender.native_log.fileName=${logs}/native.log
log4j.appender.native_log.layout=org.apache.log4j.PatternLayout
log4j.appender.native_log.layout.ConversionPattern=%d{%Y-%m-%d %H:%M:%S} %p %c %x: %m%n
`;

const SHIB_TEMPLATES = ['sessionError.html', 'metadataError.html', 'accessError.html', 'sslError.html',
  'localLogout.html', 'globalLogout.html', 'partialLogout.html', 'postTemplate.html', 'bindingTemplate.html',
  'discoveryTemplate.html', 'attrChecker.html'];

const xmlEscape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/**
 * The SAML service provider of tests/e2e/saml_shib.py's ShibbolethSp, from
 * Node: per instance, in a temp dir of its own,
 *  - its own shibd (`shibd -f -F -c <dir>/shibboleth/shibboleth2.xml -p <pid>
 *    -w 30`, in the foreground, in a process group of its own) with its own
 *    configuration directory (shibboleth2.xml, attribute-map.xml, copies of
 *    Debian's protocols.xml, security-policy.xml and templates, loggers
 *    writing to <dir>/logs, Castellan's IdP metadata fetched from
 *    /cas/idp/metadata, the SP key and self-signed certificate made here), a
 *    Unix socket in <dir>/run and sessions in shibd's memory;
 *  - its own Apache httpd (own ServerRoot, prefork, children as www-data)
 *    loading mod_shib.so with ShibConfig pointing at the same shibboleth2.xml.
 * On http://127.0.0.1:PORT/ it serves:
 *   /Shibboleth.sso/...  the SP's handler: Login, Logout, SAML2/POST (the ACS),
 *                        SLO/Redirect, SLO/POST, SLO/SOAP, Session, Status
 *   /secure/env.cgi      AuthType shibboleth, requireSession 1; prints
 *                        REMOTE_USER, AUTH_TYPE and the CGI environment (mail,
 *                        cn, persistent_id, Shib_Identity_Provider, ...), text/plain
 *   /loggedout.html      the `return` page of /Shibboleth.sso/Logout
 * The SP's entityID is http://127.0.0.1:PORT/shibboleth; its metadata (written
 * here: ACS HTTP-POST index 1, SingleLogoutService SOAP, HTTP-Redirect and
 * HTTP-POST, one certificate for signing and encryption) is what
 * `service()` registers at Castellan. REMOTE_USER is the persistent NameID as
 * Shibboleth formats it (IdP-entityID!SP-entityID!value), else mail.
 *
 * Made before Castellan starts (the SP metadata must be in its config); then
 * `start({ casBase })` fetches the IdP metadata and starts shibd and Apache.
 */
export function prepareShibbolethSp({ port, name = 'shib-sp', nameIdFormat = NAMEID_PERSISTENT,
  release = ['mail', 'cn'], remoteUser = 'persistent-id mail', label = 'shib' } = {}) {
  const missing = shibbolethAvailable();
  if (missing) throw new Error(missing); // run.sh installs it: missing is a failure, not a skip
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'castellan-browser-shib-'));
  fs.chmodSync(root, 0o755);
  for (const d of ['shibboleth', 'run', 'cache', 'logs', 'htdocs/secure']) {
    fs.mkdirSync(path.join(root, d), { recursive: true });
  }
  for (const d of ['shibboleth', 'run', 'cache', 'logs', 'htdocs', 'htdocs/secure']) {
    fs.chmodSync(path.join(root, d), 0o755);
  }
  const base = `http://127.0.0.1:${port}`;
  const handler = `${base}/Shibboleth.sso`;
  const shibDir = path.join(root, 'shibboleth');
  const logs = path.join(root, 'logs');
  const sp = {
    name,
    port,
    root,
    base,
    handler,
    entityId: `${base}/shibboleth`,
    acsUrl: `${handler}/SAML2/POST`,
    sloRedirect: `${handler}/SLO/Redirect`,
    sloPost: `${handler}/SLO/POST`,
    sloSoap: `${handler}/SLO/SOAP`,
    protectedUrl: `${base}/secure/env.cgi`,
    loggedOutUrl: `${base}/loggedout.html`,
    configPath: path.join(shibDir, 'shibboleth2.xml'),
    metadataPath: path.join(shibDir, 'sp-metadata.xml'),
    idpMetadataPath: path.join(shibDir, 'idp-metadata.xml'),
    keyPath: path.join(shibDir, 'sp-key.pem'),
    certPath: path.join(shibDir, 'sp-cert.pem'),
    socketPath: path.join(root, 'run', 'shibd.sock'),
    pidPath: path.join(root, 'run', 'shibd.pid'),
    logs,
    shibdLog: path.join(logs, 'shibd.log'),
    logPath: path.join(logs, 'error.log'), // Apache's
    idpEntityId: null,
  };
  const certB64 = makeRsaCredential(sp.keyPath, sp.certPath, `${name} 127.0.0.1:${port}`);
  const kd = `<ds:KeyInfo><ds:X509Data><ds:X509Certificate>${certB64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>`;
  fs.writeFileSync(sp.metadataPath, `<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="${SAML_NS.md}" xmlns:ds="${SAML_NS.ds}" entityID="${sp.entityId}">
  <md:SPSSODescriptor protocolSupportEnumeration="${SAML_NS.samlp}" AuthnRequestsSigned="false" WantAssertionsSigned="true">
    <md:KeyDescriptor use="signing">${kd}</md:KeyDescriptor>
    <md:KeyDescriptor use="encryption">${kd}</md:KeyDescriptor>
    <md:SingleLogoutService Binding="${SAML_BINDING.soap}" Location="${sp.sloSoap}"/>
    <md:SingleLogoutService Binding="${SAML_BINDING.redirect}" Location="${sp.sloRedirect}"/>
    <md:SingleLogoutService Binding="${SAML_BINDING.post}" Location="${sp.sloPost}"/>
    <md:NameIDFormat>${nameIdFormat}</md:NameIDFormat>
    <md:AssertionConsumerService Binding="${SAML_BINDING.post}" Location="${sp.acsUrl}" index="1" isDefault="true"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
`, { mode: 0o644 });

  /** The Castellan [[services]] TOML registering this SP; `name` is shown on the login page. */
  sp.service = () => `
[[services]]
name = ${tomlString(name)}
protocol = "saml"
metadata = ${tomlString(sp.metadataPath)}
release = ${tomlList(release)}
name_id_format = ${tomlString(nameIdFormat)}
`;

  const env = {
    PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
    LANG: 'C',
    SHIBSP_CONFIG: sp.configPath,
    // the SP resolves relative file names against <CFGDIR>/shibboleth (likewise RUNDIR, ...)
    SHIBSP_CFGDIR: root,
    SHIBSP_RUNDIR: path.join(root, 'run'),
    SHIBSP_CACHEDIR: path.join(root, 'cache'),
    SHIBSP_LOGDIR: logs,
  };

  const shibboleth2 = () => `<SPConfig xmlns="urn:mace:shibboleth:3.0:native:sp:config"
    xmlns:conf="urn:mace:shibboleth:3.0:native:sp:config"
    clockSkew="180">
    <!-- generated by tests/browser/lib/harness.mjs (prepareShibbolethSp), after tests/e2e/saml_shib.py -->
    <OutOfProcess logger="${shibDir}/shibd.logger"
        tranLogFormat="%u|%s|%IDP|%i|%ac|%t|%attr|%n|%b|%E|%S|%SS|%L|%UA|%a"/>
    <InProcess logger="${shibDir}/native.logger"/>
    <UnixListener address="${sp.socketPath}"/>

    <StorageService type="Memory" id="mem" cleanupInterval="900"/>
    <SessionCache type="StorageService" StorageService="mem" cacheAssertions="false"
                  cacheAllowance="900" inprocTimeout="900" cleanupInterval="900"/>
    <ReplayCache StorageService="mem"/>
    <ArtifactMap artifactTTL="180"/>

    <ApplicationDefaults entityID="${sp.entityId}" REMOTE_USER="${remoteUser}">
        <Sessions lifetime="28800" timeout="3600" relayState="ss:mem"
                  checkAddress="false" handlerSSL="false" cookieProps="http"
                  redirectLimit="exact">
            <SSO entityID="${xmlEscape(sp.idpEntityId)}">SAML2</SSO>
            <Logout>SAML2 Local</Logout>
            <Handler type="MetadataGenerator" Location="/Metadata" signing="false"/>
            <Handler type="Status" Location="/Status" acl="127.0.0.1 ::1"/>
            <Handler type="Session" Location="/Session" showAttributeValues="true"/>
        </Sessions>

        <Errors supportContact="root@localhost" helpLocation="/about.html" styleSheet="/shibboleth-sp/main.css"
                session="${shibDir}/sessionError.html" metadata="${shibDir}/metadataError.html"
                access="${shibDir}/accessError.html" ssl="${shibDir}/sslError.html"
                localLogout="${shibDir}/localLogout.html" globalLogout="${shibDir}/globalLogout.html"
                partialLogout="${shibDir}/partialLogout.html"/>

        <MetadataProvider type="XML" validate="true" path="${sp.idpMetadataPath}"/>
        <AttributeExtractor type="XML" validate="true" reloadChanges="false" path="${shibDir}/attribute-map.xml"/>
        <CredentialResolver type="File" key="${sp.keyPath}" certificate="${sp.certPath}"/>
    </ApplicationDefaults>

    <SecurityPolicyProvider type="XML" validate="true" path="${shibDir}/security-policy.xml"/>
    <ProtocolProvider type="XML" validate="true" reloadChanges="false" path="${shibDir}/protocols.xml"/>
</SPConfig>
`;

  const mods = ['mpm_prefork', 'authn_core', 'authz_core', 'authz_user', 'cgi', 'mime', 'dir'];
  const apacheConf = () => `# generated by tests/browser/lib/harness.mjs (prepareShibbolethSp), after tests/e2e/saml_shib.py
ServerRoot "${root}"
ServerName 127.0.0.1:${port}
UseCanonicalName On
Listen 127.0.0.1:${port}
PidFile "${root}/run/httpd.pid"
DefaultRuntimeDir "${root}/run"
Mutex file:${root}/run default
ErrorLog "${sp.logPath}"
LogLevel warn
LogFormat "%h %l %u %t \\"%r\\" %>s %b" common
CustomLog "${logs}/access.log" common
User www-data
Group www-data
${mods.map((m) => `LoadModule ${m}_module ${APACHE_MODULES}/mod_${m}.so`).join('\n')}
LoadModule mod_shib ${MOD_SHIB}
StartServers 3
MinSpareServers 2
MaxSpareServers 6
MaxRequestWorkers 16
Timeout 30
TypesConfig /dev/null
AddType text/html .html

ShibConfig ${sp.configPath}
ShibCompatValidUser Off

DocumentRoot "${root}/htdocs"
<Directory "${root}/htdocs">
    Require all granted
</Directory>
<Location /Shibboleth.sso>
    SetHandler shib
    AuthType None
    Require all granted
</Location>
<Location /secure>
    AuthType shibboleth
    ShibRequestSetting requireSession 1
    Require shib-session
</Location>
<Directory "${root}/htdocs/secure">
    Options +ExecCGI
    <Files "env.cgi">
        SetHandler cgi-script
    </Files>
</Directory>
`;

  function writeConfig(idpMetadata) {
    fs.writeFileSync(sp.idpMetadataPath, idpMetadata);
    for (const f of ['protocols.xml', 'security-policy.xml', ...SHIB_TEMPLATES]) {
      const src = path.join(SHIB_ETC, f);
      if (fs.existsSync(src)) fs.copyFileSync(src, path.join(shibDir, f));
    }
    fs.writeFileSync(path.join(shibDir, 'attribute-map.xml'), SHIB_ATTRIBUTE_MAP);
    fs.writeFileSync(path.join(shibDir, 'shibd.logger'), shibdLogger(logs));
    fs.writeFileSync(path.join(shibDir, 'native.logger'), nativeLogger(logs));
    fs.writeFileSync(sp.configPath, shibboleth2());
    for (const f of fs.readdirSync(shibDir)) {
      if (path.join(shibDir, f) !== sp.keyPath) fs.chmodSync(path.join(shibDir, f), 0o644);
    }
    // mod_shib runs in the Apache children (www-data) and logs there
    const native = path.join(logs, 'native.log');
    fs.writeFileSync(native, '');
    const www = spawnSync('id', ['-u', 'www-data'], { encoding: 'utf8' });
    const wwwG = spawnSync('id', ['-g', 'www-data'], { encoding: 'utf8' });
    if (www.status === 0 && wwwG.status === 0) {
      try { fs.chownSync(native, Number(www.stdout), Number(wwwG.stdout)); } catch { /* not root: Apache runs as us */ }
    }
    const cgi = path.join(root, 'htdocs/secure/env.cgi');
    fs.writeFileSync(cgi, SHIB_ENV_CGI);
    fs.chmodSync(cgi, 0o755);
    fs.writeFileSync(path.join(root, 'htdocs/index.html'), 'apache up\n');
    fs.writeFileSync(sp.loggedOutUrl.replace(base, path.join(root, 'htdocs')),
      '<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Logged out</title></head>'
      + '<body><h1>Logged out</h1><p id="loggedout">logged out of the shibboleth sp</p></body></html>\n');
    // Chromium asks for /favicon.ico on the text/plain CGI page: not a 404 in the console
    fs.writeFileSync(path.join(root, 'htdocs/favicon.ico'), '');
    fs.writeFileSync(path.join(root, 'httpd.conf'), apacheConf());
  }

  const procs = { shibd: null, apache: null };
  const exits = { shibd: null, apache: null };
  const logFiles = () => [
    ['shibd.log', sp.shibdLog, 80], ['shibd stdout', path.join(logs, 'shibd.stdout.log'), 20],
    ['mod_shib (native.log)', path.join(logs, 'native.log'), 30], ['apache error.log', sp.logPath, 30],
    ['apache access.log', path.join(logs, 'access.log'), 20], ['apache stdout', path.join(logs, 'stdout.log'), 20],
  ];
  sp.logTail = (scale = 1) => logFiles()
    .map(([label, file, n]) => `--- ${label} ---\n${tail(file, Math.ceil(n * scale))}`).join('\n');
  /** Current sizes of shibd's logs, for logSince. */
  sp.logMark = () => Object.fromEntries(['shibd.log', 'transaction.log', 'native.log', 'access.log'].map((f) => {
    try { return [f, fs.statSync(path.join(logs, f)).size]; } catch { return [f, 0]; }
  }));
  sp.logSince = (mark, file = 'shibd.log', max = 6000) => {
    try {
      const text = fs.readFileSync(path.join(logs, file)).subarray(mark[file] || 0).toString('utf8');
      return text.length > max ? `...${text.slice(-max)}` : text;
    } catch { return '(no log)'; }
  };
  sp.accessLog = () => fs.readFileSync(path.join(logs, 'access.log'), 'utf8');
  sp.alive = () => procs.shibd && !exits.shibd && procs.apache && !exits.apache;

  function spawnGroup(which, cmd, args, stdoutFile) {
    const out = fs.openSync(stdoutFile, 'a');
    const child = spawn(cmd, args, { stdio: ['ignore', out, out], env, detached: true });
    fs.closeSync(out);
    groups.add(child.pid);
    procs[which] = child;
    child.on('exit', (code, signal) => { exits[which] = { code, signal }; });
    return child;
  }

  sp.stop = async () => {
    for (const which of ['apache', 'shibd']) { // Apache first: its children talk to shibd
      const child = procs[which];
      if (!child) continue;
      if (!exits[which]) {
        child.kill('SIGTERM'); // Apache's parent stops its children
        const until = Date.now() + 15_000;
        while (!exits[which] && Date.now() < until) await sleep(50);
      }
      try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
      groups.delete(child.pid);
    }
    for (const [from, to] of [['shibd.log', 'shibd.log'], ['transaction.log', 'shibd-transaction.log'],
      ['native.log', 'mod_shib.log'], ['error.log', 'apache-error.log'], ['access.log', 'apache-access.log']]) {
      try { fs.copyFileSync(path.join(logs, from), path.join(OUT, `${label}-${to}`)); } catch { /* no log */ }
    }
    if (!process.env.KEEP_BROWSER_TMP) fs.rmSync(root, { recursive: true, force: true });
    return { ...exits };
  };

  sp.start = async ({ casBase, timeout = 30_000 }) => {
    const r = await fetch(`${casBase}/idp/metadata`);
    const metadata = await r.text();
    if (r.status !== 200) throw new Error(`GET ${casBase}/idp/metadata -> ${r.status}: ${metadata.slice(0, 500)}`);
    const m = /<(?:[\w-]+:)?EntityDescriptor\b[^>]*\sentityID="([^"]+)"/.exec(metadata);
    if (!m) throw new Error(`IdP metadata without an EntityDescriptor entityID: ${metadata.slice(0, 500)}`);
    sp.idpEntityId = m[1].replace(/&amp;/g, '&');
    writeConfig(metadata);
    const confPath = path.join(root, 'httpd.conf');
    for (const [what, cmd, args] of [
      ['shibd -t', SHIBD_BIN, ['-t', '-c', sp.configPath]],
      ['apache2 -t', APACHE_BIN, ['-d', root, '-f', confPath, '-t']],
    ]) {
      const check = spawnSync(cmd, args, { encoding: 'utf8', env, timeout: 60_000 });
      if (check.status !== 0) {
        await sp.stop();
        throw new Error(`${what} failed (${check.status}):\n${check.stdout}${check.stderr}\n${tail(sp.shibdLog, 60)}`);
      }
    }

    spawnGroup('shibd', SHIBD_BIN, ['-f', '-F', '-c', sp.configPath, '-p', sp.pidPath, '-w', '30'],
      path.join(logs, 'shibd.stdout.log'));
    let deadline = Date.now() + timeout;
    for (;;) {
      if (exits.shibd) {
        const why = sp.logTail();
        await sp.stop();
        throw new Error(`shibd exited at start (${JSON.stringify(exits.shibd)}):\n${why}`);
      }
      if (fs.existsSync(sp.socketPath) && tail(sp.shibdLog, 400).includes('listener service starting')) break;
      if (Date.now() > deadline) {
        const why = sp.logTail();
        await sp.stop();
        throw new Error(`shibd did not come up in ${timeout} ms:\n${why}`);
      }
      await sleep(100);
    }

    spawnGroup('apache', APACHE_BIN, ['-d', root, '-f', confPath, '-DFOREGROUND'], path.join(logs, 'stdout.log'));
    deadline = Date.now() + timeout;
    let last = null;
    for (;;) {
      if (exits.apache) {
        const why = sp.logTail();
        await sp.stop();
        throw new Error(`apache exited at start (${JSON.stringify(exits.apache)}):\n${why}`);
      }
      try {
        // the Status handler goes through mod_shib to shibd: both are up when it answers
        const s = await fetch(`${handler}/Status`);
        const text = await s.text();
        last = `${s.status} ${text.slice(0, 300)}`;
        if (s.status === 200 && text.includes('<OK')) break;
      } catch (e) { last = String(e); }
      if (Date.now() > deadline) {
        const why = sp.logTail();
        await sp.stop();
        throw new Error(`apache+mod_shib did not come up (${last}):\n${why}`);
      }
      await sleep(200);
    }
    return sp;
  };
  return sp;
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

/**
 * `scrollWidth` against `innerWidth`, and `clientWidth` (the layout viewport's
 * width): with `isMobile: true` Chromium zooms out to fit wide content, and
 * innerWidth grows with it (634 for 634px of content at 375px), so only
 * `scrollWidth <= clientWidth` catches a horizontal scroll there.
 */
export async function noHorizontalScroll(page) {
  return page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    clientWidth: document.documentElement.clientWidth,
  }));
}

export function shot(page, name) {
  return page.screenshot({ path: path.join(OUT, `${name}.png`), fullPage: true, animations: 'disabled' });
}

// ------------------------------------------------ multi-factor authentication

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** RFC 4648 base32 (no padding needed) to bytes. */
export function base32Decode(text) {
  const clean = String(text).toUpperCase().replace(/=+$/, '').replace(/\s+/g, '');
  let bits = 0;
  let value = 0;
  const out = [];
  for (const ch of clean) {
    const v = BASE32.indexOf(ch);
    if (v < 0) throw new Error(`not base32: ${ch}`);
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** The TOTP app: RFC 6238 (SHA-1, 6 digits, 30 s) code of `step` for a base32 secret. */
export function totpAt(secretB32, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = crypto.createHmac('sha1', base32Decode(secretB32)).update(counter).digest();
  const off = mac[mac.length - 1] & 0x0f;
  const bin = ((mac[off] & 0x7f) << 24) | (mac[off + 1] << 16) | (mac[off + 2] << 8) | mac[off + 3];
  return String(bin % 1_000_000).padStart(6, '0');
}

/** The secret of an otpauth://totp/...?secret=... URI. */
export function otpauthSecret(uri) {
  const u = new URL(uri);
  if (u.protocol !== 'otpauth:') throw new Error(`not an otpauth URI: ${uri}`);
  const s = u.searchParams.get('secret');
  if (!s) throw new Error(`no secret in ${uri}`);
  return s;
}

/**
 * A CDP virtual authenticator (WebAuthn domain) on `page`: {cdp, id}. The
 * defaults are a roaming CTAP2 USB key with resident keys and user
 * verification (a passkey on a security key).
 */
export async function addVirtualAuthenticator(page, options = {}) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'usb',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
      ...options,
    },
  });
  return { cdp, id: authenticatorId };
}
