"""Terra's webhook signature: `t=<unix s>,v1=<hex>[,v1=<hex>...]`, HMAC-SHA256 over `<t>.<raw body>`.

Pure functions over bytes, so tests and fuzzers call them directly. The order of checks follows
Stripe's verifier: parse, then signature, then the time window, so a forged header learns nothing
about the window.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class SignatureFailure(StrEnum):
    MISSING_HEADER = "missing_header"
    MALFORMED_HEADER = "malformed_header"
    STALE = "stale"
    MISMATCH = "mismatch"


class InvalidSignature(Exception):
    def __init__(self, reason: SignatureFailure) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass(frozen=True)
class ParsedSignature:
    timestamp: int
    signatures: tuple[str, ...]
    # The digits exactly as sent: Terra signs this text, so `t=0017...` is signed with its zeros.
    timestamp_text: str = ""


_MAX_HEADER_LENGTH = 4096


def parse_signature_header(header: str | None) -> ParsedSignature:
    if header is None or not header.strip():
        raise InvalidSignature(SignatureFailure.MISSING_HEADER)
    if len(header) > _MAX_HEADER_LENGTH:
        raise InvalidSignature(SignatureFailure.MALFORMED_HEADER)
    timestamp: str | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            timestamp = value.strip()  # the last t wins, as in Terra's SDK
        elif key == "v1":
            signatures.append(value.strip().lower())
        # Other schemes (v0, ...) are ignored: accepting them would allow a downgrade.
    if timestamp is None or not signatures or not timestamp.isascii() or not timestamp.isdigit():
        raise InvalidSignature(SignatureFailure.MALFORMED_HEADER)
    return ParsedSignature(timestamp=int(timestamp), signatures=tuple(signatures), timestamp_text=timestamp)


def compute_signature(body: bytes, secret: str, timestamp: int | str) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(body: bytes, secret: str, timestamp: int) -> str:
    """The header Terra would send for `body`: for tests, benchmarks and operators' tools."""
    return f"t={timestamp},v1={compute_signature(body, secret, timestamp)}"


def verify_signature(
    *, body: bytes, header: str | None, secrets: Iterable[str], now: float, tolerance: int = 300
) -> None:
    """Return if any `v1` matches any secret within the window; else raise InvalidSignature."""
    parsed = parse_signature_header(header)
    expected = [compute_signature(body, secret, parsed.timestamp_text) for secret in secrets]
    # Every comparison runs, so timing does not reveal which secret or which v1 matched.
    matched = False
    for candidate in parsed.signatures:
        for digest in expected:
            matched |= hmac.compare_digest(candidate.encode(), digest.encode())
    if not matched:
        raise InvalidSignature(SignatureFailure.MISMATCH)
    # Compared, not subtracted: a correctly signed t of 4000 digits has no float to convert to.
    if not now - tolerance <= parsed.timestamp <= now + tolerance:
        raise InvalidSignature(SignatureFailure.STALE)
