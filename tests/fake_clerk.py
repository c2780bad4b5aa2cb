"""A stand-in for Clerk: RSA keys, a JWKS served over real HTTP on loopback, and session tokens; and
the Backend API's `GET /v1/users/{id}` for the users in `users`, to callers bearing `SECRET_KEY`."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://clerk.amy.example"
AUTHORIZED_PARTY = "https://app.amy.example"
SECRET_KEY = "sk_test_fake_clerk"  # the fake Backend API's own key


def clerk_user(user_id: str, *emails: str, primary: int = 0) -> dict[str, Any]:
    """A Backend API user object with these email addresses, the `primary`-th one primary."""
    addresses = [{"id": f"idn_{n}", "email_address": email} for n, email in enumerate(emails)]
    return {
        "id": user_id,
        "object": "user",
        "primary_email_address_id": addresses[primary]["id"] if addresses else None,
        "email_addresses": addresses,
    }


@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    def jwk(self) -> dict[str, Any]:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@dataclass
class FakeClerk:
    keys: list[SigningKey] = field(default_factory=lambda: [SigningKey("key-1")])
    fetches: int = 0
    down: bool = False
    # The Backend API: user objects by id, and the path of each request it received.
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    api_requests: list[str] = field(default_factory=list)
    api_down: bool = False
    server: ThreadingHTTPServer | None = None

    @property
    def jwks_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"

    @property
    def api_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/v1/users/"):
                    self._backend_api()
                    return
                fake.fetches += 1
                if fake.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                self._json(200, {"keys": [key.jwk() for key in fake.keys]})

            def _backend_api(self) -> None:
                fake.api_requests.append(self.path)
                if fake.api_down:
                    self._json(503, {"errors": [{"code": "unavailable"}]})
                elif self.headers.get("authorization") != f"Bearer {SECRET_KEY}":
                    self._json(401, {"errors": [{"code": "authentication_invalid"}]})
                elif (user := fake.users.get(unquote(self.path.removeprefix("/v1/users/")))) is None:
                    self._json(404, {"errors": [{"code": "resource_not_found"}]})
                else:
                    self._json(200, user)

            def _json(self, status: int, answer: Any) -> None:
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def token(self, sub: str = "user_clerk_1", *, key: SigningKey | None = None, **overrides: Any) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        claims = {
            "sub": sub,
            "iss": ISSUER,
            "iat": now,
            "nbf": now - 5,
            "exp": now + 60,
            "azp": AUTHORIZED_PARTY,
            "sid": "sess_1",
            **overrides,
        }
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid})
