"""A stand-in for Clerk: RSA keys, a JWKS served over real HTTP on loopback, and session tokens."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://clerk.amy.example"
AUTHORIZED_PARTY = "https://app.amy.example"


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
    server: ThreadingHTTPServer | None = None

    @property
    def jwks_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.fetches += 1
                if fake.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps({"keys": [key.jwk() for key in fake.keys]}).encode()
                self.send_response(200)
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
