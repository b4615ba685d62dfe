// Harness of the browser tests: a real castellan process, a tiny CAS client
// application (Node HTTP server) and Debian's Chromium driven by playwright-core.
//
// Everything listens on 127.0.0.1 only, on ports picked free at start.

import { spawn } from 'node:child_process';
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
process.on('exit', () => {
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

export async function startCastellan({ port, appPort }) {
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
`;
  const configPath = path.join(tmp, 'castellan.toml');
  fs.writeFileSync(configPath, config);
  const logPath = path.join(OUT, 'castellan.log');
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
 */
export async function startApp({ port, casBase }) {
  const app = {
    origin: `http://127.0.0.1:${port}`,
    received: [],
    hits: [],
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

  async function handle(req, res) {
    const url = new URL(req.url, app.origin);
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
 * page for a wrong password is intended): "Failed to load resource: the server
 * responded with a status of 401" whose URL is a page that was navigated to.
 */
export function realProblems(problems, documentUrls = []) {
  return problems.filter((p) => !(
    p.kind === 'console'
    && /^Failed to load resource: the server responded with a status of (401|403|429)\b/.test(p.text)
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
