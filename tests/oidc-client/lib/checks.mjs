// Assertions shared by the test files.

import assert from 'node:assert/strict';
import * as client from 'openid-client';
import * as jose from 'jose';
import { describeError } from './harness.mjs';

/** The error is an OAuth error response (JSON {error}) with that code (and status). */
export function assertOAuthError(e, error, status = undefined, what = '') {
  const prefix = what ? `${what}: ` : '';
  assert.ok(e instanceof client.ResponseBodyError,
    `${prefix}expected an OAuth error response "${error}", got ${describeError(e)}`);
  assert.equal(e.error, error, `${prefix}error code (${describeError(e)})`);
  if (status !== undefined) assert.equal(e.status, status, `${prefix}HTTP status (${describeError(e)})`);
}

/** The server's JWKS as a jose key set (fetched each time: keys may rotate between servers). */
export async function jwks(cas) {
  const r = await fetch(`${cas.issuer}/jwks`);
  assert.equal(r.status, 200, 'GET jwks_uri');
  const set = await r.json();
  return { set, keys: jose.createLocalJWKSet(set) };
}

/** Verifies a JWT's signature against the JWKS (and optional jose options); returns { payload, protectedHeader }. */
export async function verifyJwt(cas, jwt, options = {}, what = 'JWT') {
  const { set, keys } = await jwks(cas);
  try {
    return await jose.jwtVerify(jwt, keys, options);
  } catch (e) {
    assert.fail(`${what} does not verify against the JWKS (${e.code || e.name}: ${e.message}); header ${
      JSON.stringify(jose.decodeProtectedHeader(jwt))}, kids ${JSON.stringify(set.keys.map((k) => k.kid))}`);
  }
  return null;
}

/** Splits a space-delimited scope string into a sorted array. */
export const scopes = (s) => String(s ?? '').split(' ').filter(Boolean).sort();

/** The query parameters of an authorization (error) response as an object. */
export const query = (url) => Object.fromEntries(new URL(url).searchParams);

/** Seconds since the epoch. */
export const now = () => Math.floor(Date.now() / 1000);
