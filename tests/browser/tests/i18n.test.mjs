// Languages in a real browser (Debian's Chromium): the login page, an error
// page, the second step of a sign-in (enrolment, with the service's theme)
// and the user's /mfa page, in English, French, German and Spanish, chosen
// once by the browser's language (Accept-Language, a regional variant) and
// once by ?locale= (then remembered by its cookie). Each page must be in its
// language (html lang, a translated heading), show no catalogue key, load
// under the CSP without a violation, and is kept as a screenshot in
// tests/browser/screenshots/<lang>-<via>-<page>.png.
// Run through tests/browser/run.sh.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  BROWSER_DIR, freePort, launchBrowser, realProblems, startApp, startCastellan, watchProblems,
} from '../lib/harness.mjs';

const SCREENSHOTS = path.join(BROWSER_DIR, 'screenshots');
fs.mkdirSync(SCREENSHOTS, { recursive: true });

const LANGS = {
  en: { region: 'en-GB', login: 'Sign in', error: 'Application not authorized',
    mfa: 'Your sign-in methods', step: 'Set up two-step verification', username: 'Username' },
  fr: { region: 'fr-CA', login: 'Connexion', error: 'Application non autorisée',
    mfa: 'Vos moyens de connexion', step: 'Configurer la vérification en deux étapes', username: 'Identifiant' },
  de: { region: 'de-AT', login: 'Anmelden', error: 'Anwendung nicht zugelassen',
    mfa: 'Ihre Anmeldemethoden', step: 'Zwei-Schritt-Verifizierung einrichten', username: 'Benutzername' },
  es: { region: 'es-MX', login: 'Iniciar sesión', error: 'Aplicación no autorizada',
    mfa: 'Sus métodos de inicio de sesión', step: 'Configurar la verificación en dos pasos', username: 'Usuario' },
};
const VIAS = ['header', 'param'];
// A message id on screen would start like one of the catalogue's.
const KEY = /\b(login|error|account|notice|signed|upstream|post|step|mfa|passkey|brand|skip|language|code|qr|cant)-[a-z0-9]+(-[a-z0-9]+)*\b/;

let cas;
let app;
let mfaApp;
let browser;
const user = (lang, via) => `i18n-${lang}-${via}`;

before(async () => {
  const ports = new Set();
  while (ports.size < 3) ports.add(await freePort());
  const [port, appPort, mfaPort] = [...ports];
  const casBase = `http://localhost:${port}/cas`;
  app = await startApp({ port: appPort, casBase });
  mfaApp = await startApp({ port: mfaPort, casBase });
  const logo = path.join(SCREENSHOTS, '..', '.out', 'i18n-logo.svg');
  fs.mkdirSync(path.dirname(logo), { recursive: true });
  fs.writeFileSync(logo, '<svg xmlns="http://www.w3.org/2000/svg" width="96" height="48" viewBox="0 0 96 48">'
    + '<rect width="96" height="48" rx="8" fill="#2a7d4f"/><text x="48" y="31" font-size="18" fill="#fff" '
    + 'text-anchor="middle" font-family="sans-serif">Campus</text></svg>');
  const users = Object.keys(LANGS).flatMap((l) => VIAS.map((v) => `
[[users]]
username = "${user(l, v)}"
password = "pw-${user(l, v)}"
`)).join('');
  const services = `
[[services]]
name = "campus-app"
protocol = "cas"
service = '^http://127\\.0\\.0\\.1:${mfaPort}/app/.*$'
release = []
mfa = "required"
theme = "campus"
${users}
[mfa]
store = "sqlite"
issuer = "Castellan"

[themes.campus]
display_name = "Campus Portal"
logo = "${logo}"
accent_color = "#2a7d4f"
`;
  cas = await startCastellan({ port, appPort, services, host: 'localhost', logName: 'castellan-i18n.log' });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close().catch((e) => console.error('closing chromium:', e));
  await cas?.stop().catch((e) => console.error('stopping castellan:', e));
  await app?.stop().catch((e) => console.error('stopping the app:', e));
  await mfaApp?.stop().catch((e) => console.error('stopping the mfa app:', e));
});

async function check(page, problems, lang, via, name, heading) {
  await page.waitForLoadState('load');
  assert.equal(await page.locator('html').getAttribute('lang'), lang, `${name}: html lang (${page.url()})`);
  const h1 = (await page.locator('h1').first().innerText()).trim();
  assert.equal(h1, heading, `${name}: heading in ${lang}`);
  const text = await page.locator('body').innerText();
  assert.doesNotMatch(text, KEY, `${name}: a catalogue key on screen in ${lang}`);
  const current = page.locator('nav.languages a[aria-current="true"]');
  assert.equal(await current.getAttribute('hreflang'), lang, `${name}: the language menu marks ${lang}`);
  assert.deepEqual(realProblems(problems, [page.url()]), [], `${name}: console errors or CSP violations`);
  problems.length = 0;
  await page.screenshot({ path: path.join(SCREENSHOTS, `${lang}-${via}-${name}.png`), fullPage: true, animations: 'disabled' });
  return text;
}

for (const [lang, t] of Object.entries(LANGS)) {
  for (const via of VIAS) {
    test(`${lang} by ${via}: login, error, second step and /mfa pages are in ${lang}`, async () => {
      const options = via === 'header' ? { locale: t.region } : { locale: 'en-US' };
      const context = await browser.newContext({ viewport: { width: 1024, height: 800 }, ...options });
      context.setDefaultTimeout(15_000);
      const problems = await watchProblems(context);
      const page = await context.newPage();
      const q = via === 'param' ? `&locale=${lang}` : '';
      try {
        // The login page for a service.
        await page.goto(`${cas.base}/login?service=${encodeURIComponent(app.url('/app/'))}${q}`);
        const text = await check(page, problems, lang, via, 'login', t.login);
        assert.ok(text.includes(t.username), `login: the username label in ${lang}`);
        if (via === 'param') {
          const cookie = (await context.cookies(`${cas.base}/`)).find((c) => c.name === 'castellan_locale');
          assert.equal(cookie?.value, lang, 'the chosen language is remembered');
          assert.ok(cookie.httpOnly && cookie.sameSite === 'Lax', 'castellan_locale is HttpOnly, SameSite=Lax');
        }
        // An error page: a service that is not registered (no ?locale= now:
        // the cookie or the browser's language decides).
        await page.goto(`${cas.base}/login?service=${encodeURIComponent('http://unregistered.example.test/')}`);
        await check(page, problems, lang, via, 'error', t.error);
        // /mfa: signs in first, then the user's own page.
        await page.goto(`${cas.base}/mfa`);
        await page.locator('#username').fill(user(lang, via));
        await page.locator('#password').fill(`pw-${user(lang, via)}`);
        await Promise.all([page.waitForURL(/\/cas\/mfa/), page.locator('#password').press('Enter')]);
        await check(page, problems, lang, via, 'mfa', t.mfa);
        // The second step: the themed service asks for a factor the user
        // does not have yet (enrolment), naming itself with its logo.
        await page.goto(mfaApp.url('/app/'));
        await page.waitForSelector('form#otp-form');
        await check(page, problems, lang, via, 'second-step', t.step);
        assert.ok((await page.locator('main .service-name').innerText()).includes('Campus Portal'));
        const logo = page.locator('img.service-logo');
        assert.equal(await logo.evaluate((img) => img.complete && img.naturalWidth > 0), true, 'the theme logo loads');
        const accent = await page.locator('button.button-primary').evaluate((b) => getComputedStyle(b).backgroundColor);
        assert.equal(accent, 'rgb(42, 125, 79)', 'the theme accent colour applies');
        // The passkey messages of webauthn.js come translated from the page.
        const failed = await page.locator('#webauthn-error').first().getAttribute('data-failed').catch(() => null);
        if (failed !== null) assert.doesNotMatch(failed, KEY);
      } catch (err) {
        await page.screenshot({ path: path.join(SCREENSHOTS, `FAILED-${lang}-${via}.png`), fullPage: true }).catch(() => {});
        err.message += `\n(castellan log: ${cas.logPath})`;
        throw err;
      } finally {
        await context.close();
      }
    });
  }
}
