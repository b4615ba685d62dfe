"""A scripted OpenID Provider for the delegation tests that need an OP to
misbehave on purpose: it answers every authorization request at once (as an
OP with an SSO session would), and the test decides what the ID token says
about `auth_time` — e.g. an old one despite prompt=login, as an OP that
ignores prompt=login would.

Discovery, JWKS (one RS256 key), /authorize (records the query, redirects
back with a code), /token (a signed ID token with iss, sub, aud, exp, iat,
nonce and auth_time when set).  Plain http on loopback, stopped by the test.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

SUBJECT = "casuser"
CLIENT_ID = "castellan"
CLIENT_SECRET = "scripted-secret"


class ScriptedOp:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "k1"
        # What the next ID token says: None leaves auth_time out.
        self.auth_time: int | None = None
        self.authorize_requests: list[dict[str, str]] = []
        self._codes: dict[str, dict[str, str]] = {}
        op = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                u = urlparse(self.path)
                if u.path == "/.well-known/openid-configuration":
                    self._json(200, op.discovery())
                elif u.path == "/jwks":
                    jwk = json.loads(RSAAlgorithm.to_jwk(op.key.public_key()))
                    jwk.update(kid=op.kid, use="sig", alg="RS256")
                    self._json(200, {"keys": [jwk]})
                elif u.path == "/authorize":
                    q = {k: v[0] for k, v in parse_qs(u.query).items()}
                    op.authorize_requests.append(q)
                    code = secrets.token_urlsafe(16)
                    op._codes[code] = q
                    self.send_response(302)
                    self.send_header("Location", q["redirect_uri"] + "?" + urlencode(
                        {"code": code, "state": q.get("state", "")}))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self):
                u = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if u.path != "/token":
                    return self._json(404, {"error": "not_found"})
                q = op._codes.pop(form.get("code", ""), None)
                if q is None:
                    return self._json(400, {"error": "invalid_grant"})
                now = int(time.time())
                claims = {"iss": op.issuer, "sub": SUBJECT, "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                          "email": "casuser@scripted.example"}
                if "nonce" in q:
                    claims["nonce"] = q["nonce"]
                if op.auth_time is not None:
                    claims["auth_time"] = op.auth_time
                token = jwt.encode(claims, op.key, algorithm="RS256", headers={"kid": op.kid})
                self._json(200, {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                                 "expires_in": 300, "id_token": token})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def discovery(self) -> dict:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "jwks_uri": self.issuer + "/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            "code_challenge_methods_supported": ["S256"],
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
