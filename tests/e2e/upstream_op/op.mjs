// An upstream OpenID Provider for Castellan's delegated-authentication tests:
// the npm package oidc-provider (an OpenID Certified implementation), on plain
// http on loopback.
//
//   node op.mjs PORT CALLBACK_URL...
//
// Issuer http://127.0.0.1:PORT (discovery at /.well-known/openid-configuration;
// authorization /auth, token /token, userinfo /me, JWKS /jwks).
// Two confidential clients, both registered with every CALLBACK_URL (exact
// match) and client_secret_basic, code flow only, PKCE S256 required:
//   castellan        / change-me       (the "oidc" upstream)
//   castellan-oauth2 / change-me-too   (the "oauth2" upstream: /auth, /token, /me)
// Accounts (log in with the account id as login name, any password):
//   u-42  email casuser@partner.example (verified), name "Partner User"
//   u-7   no email, name "No Mail"
// The login and consent pages are oidc-provider's own devInteractions
// (/interaction/UID: a login form, then a consent form, and a "[ Cancel ]"
// link that ends the request with error=access_denied).
//
// Environment:
//   OP_ID_TOKEN_CLAIMS=1  put the scope claims (email, name) in the ID token too
//                         (conformIdTokenClaims=false). By default, as OIDC Core
//                         §5.4 says for a response_type that yields an access
//                         token, they are only at the userinfo endpoint.
//
// A misbehaving provider on request, for the relying party's negative tests:
//   POST /__test/tamper?mode=MODE   the next token response's ID token (or, for
//                                   userinfo-*, the next userinfo response) is
//                                   altered; one-shot. GET /__test/tamper shows
//                                   the pending mode. MODE is one of:
//     nonce          nonce claim replaced            (re-signed with the real key)
//     no-nonce       nonce claim removed             (re-signed with the real key)
//     aud            aud = another client             (re-signed with the real key)
//     iss            iss = another issuer             (re-signed with the real key)
//     expired        exp/iat an hour in the past      (re-signed with the real key)
//     payload        sub changed, signature kept      (the signature no longer verifies)
//     foreign-key    signed with a key not in the JWKS (kid unknown)
//     alg-none       unsigned token, header alg "none"
//     userinfo-sub   userinfo answers another sub and email than the ID token's
//
// Prints "READY <issuer>" when listening; one JSON line per notable provider
// event after that (the test harness keeps it in a log file).

import {
  createPrivateKey, generateKeyPairSync, randomBytes, sign,
} from 'node:crypto';

import Provider from 'oidc-provider';

const [portArg, ...callbacks] = process.argv.slice(2);
const port = Number.parseInt(portArg, 10);
if (!Number.isInteger(port) || port <= 0 || callbacks.length === 0) {
  console.error('usage: node op.mjs PORT CALLBACK_URL...');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

const ACCOUNTS = {
  'u-42': {
    email: 'casuser@partner.example',
    email_verified: true,
    name: 'Partner User',
    given_name: 'Partner',
    family_name: 'User',
    locale: 'en',
  },
  'u-7': {
    name: 'No Mail',
  },
};

// Fresh signing keys per run: an RSA key (RS256, the default ID token alg) and
// an EC key, so that the relying party has to pick the key by kid.
function jwk(type, options, kid) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig' };
}
const jwks = {
  keys: [
    jwk('rsa', { modulusLength: 2048 }, `rsa-${randomBytes(4).toString('hex')}`),
    jwk('ec', { namedCurve: 'P-256' }, `ec-${randomBytes(4).toString('hex')}`),
  ],
};

const client = (clientId, secret) => ({
  client_id: clientId,
  client_secret: secret,
  redirect_uris: callbacks,
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: 'RS256',
});

const configuration = {
  clients: [client('castellan', 'change-me'), client('castellan-oauth2', 'change-me-too')],
  jwks,
  cookies: { keys: [randomBytes(32).toString('hex')] },
  async findAccount(ctx, id) {
    const account = ACCOUNTS[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...account };
      },
    };
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'locale'],
  },
  conformIdTokenClaims: process.env.OP_ID_TOKEN_CLAIMS !== '1',
  // the request must name its redirect_uri (OIDC Core §3.1.2.1: REQUIRED)
  allowOmittingSingleRegisteredRedirectUri: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    userinfo: { enabled: true },
  },
  // the provider's own error page, with the error code in a findable place
  async renderError(ctx, out) {
    ctx.type = 'html';
    const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
    ctx.body = `<!DOCTYPE html><html><head><title>oidc-provider error</title></head><body>
<h1>oidc-provider error</h1>
${Object.entries(out).map(([k, v]) => `<p id="${esc(k)}">${esc(k)}: ${esc(v)}</p>`).join('\n')}
</body></html>`;
  },
};

// ---------------------------------------------------------------- tampering
const b64u = (buf) => Buffer.from(buf).toString('base64url');
const json64 = (obj) => b64u(JSON.stringify(obj));
const realRsa = jwks.keys[0];
const foreignRsa = jwk('rsa', { modulusLength: 2048 }, `foreign-${randomBytes(4).toString('hex')}`);

function signRs256(header, payload, key) {
  const input = `${json64(header)}.${json64(payload)}`;
  const sig = sign('RSA-SHA256', Buffer.from(input), createPrivateKey({ key, format: 'jwk' }));
  return `${input}.${b64u(sig)}`;
}

function tamperIdToken(token, mode) {
  const [h, p, s] = token.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url').toString());
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
  const now = Math.floor(Date.now() / 1000);
  const resign = () => signRs256({ alg: 'RS256', kid: realRsa.kid }, payload, realRsa);
  switch (mode) {
    case 'nonce': payload.nonce = `not-${payload.nonce ?? 'sent'}`; return resign();
    case 'no-nonce': delete payload.nonce; return resign();
    case 'aud': payload.aud = 'someone-else'; return resign();
    case 'iss': payload.iss = 'http://127.0.0.1:1'; return resign();
    case 'expired': payload.iat = now - 7200; payload.exp = now - 3600; return resign();
    case 'payload': payload.sub = 'u-1'; return `${h}.${json64(payload)}.${s}`;
    case 'foreign-key': return signRs256({ alg: 'RS256', kid: foreignRsa.kid }, payload, foreignRsa);
    case 'alg-none': return `${json64({ ...header, alg: 'none', kid: undefined })}.${p}.`;
    default: throw new Error(`unknown tamper mode ${mode}`);
  }
}

const TAMPER_MODES = new Set(['nonce', 'no-nonce', 'aud', 'iss', 'expired', 'payload', 'foreign-key',
  'alg-none', 'userinfo-sub']);
let tamper = null;

const provider = new Provider(issuer, configuration);
provider.proxy = false;

const log = (event, data) => console.log(JSON.stringify({ t: new Date().toISOString(), event, ...data }));
const clientOf = (ctx) => ctx?.oidc?.client?.clientId;
for (const ev of ['authorization.error', 'grant.error', 'userinfo.error', 'server_error',
  'introspection.error', 'jwks.error', 'discovery.error', 'end_session.error']) {
  provider.on(ev, (ctx, err) => log(ev, {
    client: clientOf(ctx), error: err?.error ?? err?.name, description: err?.error_description ?? err?.message,
  }));
}
provider.on('authorization.accepted', (ctx) => log('authorization.accepted', {
  client: clientOf(ctx), params: ctx.oidc.params,
}));
provider.on('grant.success', (ctx) => log('grant.success', {
  client: clientOf(ctx), auth: ctx.oidc.client?.clientAuthMethod,
}));
provider.on('interaction.started', (ctx, prompt) => log('interaction.started', { prompt: prompt.name }));
// every request, with the basics (method, path, status); the tampering hooks
provider.use(async (ctx, next) => {
  if (ctx.path === '/__test/tamper') {
    if (ctx.method === 'POST') {
      const mode = ctx.query.mode || null;
      if (mode !== null && !TAMPER_MODES.has(mode)) ctx.throw(400, `unknown mode ${mode}`);
      tamper = mode;
    }
    ctx.body = { tamper };
    log('tamper', { mode: tamper });
    return;
  }
  await next();
  if (tamper && ctx.path === '/token' && ctx.method === 'POST' && ctx.status === 200
      && ctx.body?.id_token && !tamper.startsWith('userinfo-')) {
    ctx.body = { ...ctx.body, id_token: tamperIdToken(ctx.body.id_token, tamper) };
    log('tampered', { what: 'id_token', mode: tamper });
    tamper = null;
  } else if (tamper === 'userinfo-sub' && ctx.path === '/me' && ctx.status === 200
      && ctx.body && typeof ctx.body === 'object') {
    ctx.body = { ...ctx.body, sub: 'u-666', email: 'attacker@evil.example' };
    log('tampered', { what: 'userinfo', mode: tamper });
    tamper = null;
  }
  log('http', {
    method: ctx.method,
    path: ctx.path,
    status: ctx.status,
    auth: ctx.get('authorization') ? ctx.get('authorization').split(' ')[0] : undefined,
    ua: ctx.get('user-agent') || undefined,
  });
});

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
server.on('error', (err) => {
  console.error(`op.mjs: cannot listen on 127.0.0.1:${port}: ${err.message}`);
  process.exit(1);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  });
}
