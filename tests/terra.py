"""Terra-side helpers for tests: the sample bodies and how Terra signs them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from ingest.signature import signature_header

FIXTURES = Path(__file__).parent / "fixtures" / "terra"
SAMPLES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def sample(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def sign(body: bytes, *, secret: str | None = None, at: int | None = None) -> str:
    return signature_header(body, secret or settings.TERRA_WEBHOOK_SECRETS[0], int(time.time()) if at is None else at)


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def signed_headers(body: bytes, **extra: str) -> dict[str, str]:
    return {"terra-signature": sign(body), "content-type": "application/json", **extra}
