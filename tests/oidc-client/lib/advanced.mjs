// Clients of the advanced OIDC tests (private_key_jwt, PAR, the claims
// parameter, ID tokens on refresh): their keys, a JWKS server standing for a
// client's jwks_uri, and a castellan configured with them beside the
// harness's clients.

import http from 'node:http';
import * as jose from 'jose';
import { configText, distinctPorts, startCastellan, startRp, tomlList, tomlString } from './harness.mjs';

export const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/** private_key_jwt with an inline jwks (RS256 key). */
export const JWT_RS = { client_id: 'rp-jwt-rs256', kid: 'rs-1', alg: 'RS256' };
/** private_key_jwt with a jwks_uri (ES256 key) served by the test. */
export const JWT_ES = { client_id: 'rp-jwt-es256', kid: 'es-1', alg: 'ES256' };
/** A confidential client that must push its authorization requests. */
export const PAR_ONLY = { client_id: 'rp-par-only', client_secret: 'par-only-secret-8d7e' };
/** A confidential client with ID tokens in refresh responses. */
export const REFRESH_IDT = { client_id: 'rp-refresh-idt', client_secret: 'refresh-idt-secret-1a2b' };

/** A key pair for `alg`, its public JWK with `kid`. */
export async function keyPair(alg, kid) {
  const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await jose.exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { publicKey, privateKey, jwk, kid, alg };
}

/** A client assertion (RFC 7523 §3) signed by `key`; `claims` overrides. */
export function assertion(key, clientId, aud, claims = {}, header = {}) {
  const exp = Math.floor(Date.now() / 1000) + 60;
  return new jose.SignJWT({ jti: crypto.randomUUID(), iss: clientId, sub: clientId, aud, exp, ...claims })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, ...header })
    .setIssuedAt()
    .sign(key.privateKey);
}

/** A JWKS server: `keys` is what it serves at /jwks; `hits` counts the fetches. */
export async function startJwksServer(port) {
  const srv = {
    keys: [],
    hits: 0,
    url: `http://127.0.0.1:${port}/jwks`,
  };
  const server = http.createServer((req, res) => {
    if (req.url !== '/jwks') {
      res.statusCode = 404;
      res.end();
      return;
    }
    srv.hits += 1;
    res.setHeader('Content-Type', 'application/jwk-set+json');
    res.end(JSON.stringify({ keys: srv.keys }));
  });
  await new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  srv.stop = () => new Promise((resolve) => {
    server.closeAllConnections?.();
    server.close(() => resolve());
  });
  return srv;
}

function extraClients({ rpOrigin, rsJwk, jwksUrl }) {
  const cb = (p) => tomlList([`${rpOrigin}/${p}/callback`]);
  return `
# private_key_jwt, inline keys (RS256)
[[services]]
name = "JWT RS256 RP"
protocol = "oidc"
client_id = ${tomlString(JWT_RS.client_id)}
token_endpoint_auth_method = "private_key_jwt"
jwks = '${JSON.stringify({ keys: [rsJwk] })}'
redirect_uris = ${cb('jwt-rs')}
scopes = ["openid", "email", "api"]
release = ["mail"]
grant_types = ["authorization_code", "refresh_token", "client_credentials"]

# private_key_jwt, keys at a jwks_uri (ES256)
[[services]]
name = "JWT ES256 RP"
protocol = "oidc"
client_id = ${tomlString(JWT_ES.client_id)}
token_endpoint_auth_method = "private_key_jwt"
jwks_uri = ${tomlString(jwksUrl)}
redirect_uris = ${cb('jwt-es')}
scopes = ["openid", "email", "api"]
release = ["mail"]
grant_types = ["authorization_code", "client_credentials"]

# pushed authorization requests only
[[services]]
name = "PAR-only RP"
protocol = "oidc"
client_id = ${tomlString(PAR_ONLY.client_id)}
client_secret = ${tomlString(PAR_ONLY.client_secret)}
require_pushed_authorization_requests = true
redirect_uris = ${cb('par')}
scopes = ["openid", "email"]
release = ["mail"]

# an ID token in refresh responses
[[services]]
name = "Refresh ID token RP"
protocol = "oidc"
client_id = ${tomlString(REFRESH_IDT.client_id)}
client_secret = ${tomlString(REFRESH_IDT.client_secret)}
id_token_on_refresh = true
redirect_uris = ${cb('refresh')}
scopes = ["openid", "email", "profile"]
release = ["mail", "cn"]
`;
}

/**
 * The relying party, a JWKS server and castellan with the harness's clients
 * and the ones above. `keys`: { rs, es } key pairs (the ES key is served by
 * the JWKS server).
 */
export async function startAdvanced(name) {
  const [port, rpPort, jwksPort] = await distinctPorts(3);
  const rs = await keyPair('RS256', JWT_RS.kid);
  const es = await keyPair('ES256', JWT_ES.kid);
  const rp = await startRp({ port: rpPort });
  const jwks = await startJwksServer(jwksPort);
  jwks.keys = [es.jwk];
  let cas;
  try {
    cas = await startCastellan({
      port,
      rpOrigin: rp.origin,
      name,
      config: (args) => configText(args) + extraClients({ rpOrigin: args.rpOrigin, rsJwk: rs.jwk, jwksUrl: jwks.url }),
    });
  } catch (e) {
    await rp.stop();
    await jwks.stop();
    throw e;
  }
  return {
    cas,
    rp,
    jwks,
    keys: { rs, es },
    async stop() {
      await cas.stop().catch((e) => console.error('stopping castellan:', e));
      await rp.stop().catch((e) => console.error('stopping the relying party:', e));
      await jwks.stop().catch((e) => console.error('stopping the JWKS server:', e));
    },
  };
}
