"""Terra's webhook signature: `t=<unix s>,v1=<hex>[,v1=<hex>...]`, HMAC-SHA256 over `<t>.<raw body>`.

Pure functions over bytes, so tests and fuzzers call them directly. The header is checked on its
own first (its shape, then the time window: `signature_header_check`), so the webhook refuses a
malformed or stale header before it reads a byte of the body; only then is the body's HMAC compared
(`signature_body_verify`). The window is no secret: a forged header learns nothing from it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


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
        elif key == "v1" and _SHA256_HEX.fullmatch(value.strip().lower()):
            signatures.append(value.strip().lower())
        # Other schemes (v0, ...) are ignored: accepting them would allow a downgrade. So is a v1
        # that is no SHA-256 hex digest: it can never match.
    if timestamp is None or not signatures or not timestamp.isascii() or not timestamp.isdigit():
        raise InvalidSignature(SignatureFailure.MALFORMED_HEADER)
    return ParsedSignature(timestamp=int(timestamp), signatures=tuple(signatures), timestamp_text=timestamp)


def compute_signature(body: bytes, secret: str, timestamp: int | str) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(body: bytes, secret: str, timestamp: int) -> str:
    """The header Terra would send for `body`: for tests, benchmarks and operators' tools."""
    return f"t={timestamp},v1={compute_signature(body, secret, timestamp)}"


def signature_header_check(header: str | None, *, now: float, tolerance: int = 300) -> ParsedSignature:
    """The parsed header when its shape is right and its time is within the window; else raise
    InvalidSignature (missing_header, malformed_header, stale). Needs no body."""
    parsed = parse_signature_header(header)
    # Compared, not subtracted: a t of 4000 digits has no float to convert to.
    if not now - tolerance <= parsed.timestamp <= now + tolerance:
        raise InvalidSignature(SignatureFailure.STALE)
    return parsed


def signature_body_verify(*, body: bytes, parsed: ParsedSignature, secrets: Iterable[str]) -> None:
    """Return if any `v1` of the checked header matches any secret over `body`; else raise mismatch."""
    expected = [compute_signature(body, secret, parsed.timestamp_text) for secret in secrets]
    # Every comparison runs, so timing does not reveal which secret or which v1 matched.
    matched = False
    for candidate in parsed.signatures:
        for digest in expected:
            matched |= hmac.compare_digest(candidate.encode(), digest.encode())
    if not matched:
        raise InvalidSignature(SignatureFailure.MISMATCH)


def verify_signature(
    *, body: bytes, header: str | None, secrets: Iterable[str], now: float, tolerance: int = 300
) -> None:
    """Return if the header is well formed, within the window, and any `v1` matches any secret;
    else raise InvalidSignature with the first check that failed, in that order."""
    parsed = signature_header_check(header, now=now, tolerance=tolerance)
    signature_body_verify(body=body, parsed=parsed, secrets=secrets)
