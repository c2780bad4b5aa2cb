"""`terra-signature` under generated headers: a header is accepted only when one of its
`v1` values is the HMAC of `<t>.<body>` under a configured secret within ±300 s; every other header
is a 401 with the reason a reference reading of the header gives; nothing raises or answers 5xx."""

from __future__ import annotations

import hashlib
import hmac
import re
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ingest.models import RawEvent
from ingest.signature import InvalidSignature, SignatureFailure, verify_signature
from tests.conftest import PostWebhook
from tests.terra import sample

SECRETS = ["test-secret", "test-old-secret"]
BODY = sample("sleep")
NOW = 1_764_000_000
TOLERANCE = 300


def hmac_hex(secret: str, t: str, body: bytes = BODY) -> str:
    return hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()


def expected_reason(header: str | None, now: float, body: bytes = BODY) -> SignatureFailure | None:
    """A reference reading of the header (shape, window, then digest): None means accepted."""
    if header is None or not header.strip():
        return SignatureFailure.MISSING_HEADER
    if len(header) > 4096:
        return SignatureFailure.MALFORMED_HEADER
    t, v1s = None, []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep and key == "t":
            t = value.strip()
        elif sep and key == "v1":
            v1s.append(value.strip().lower())
    v1s = [v1 for v1 in v1s if re.fullmatch("[0-9a-f]{64}", v1)]  # a digest's shape, or ignored
    if t is None or not v1s or not (t.isascii() and t.isdigit()):
        return SignatureFailure.MALFORMED_HEADER
    # The window is checked before the body is read; what Terra signs is the timestamp as sent.
    if not now - TOLERANCE <= int(t) <= now + TOLERANCE:
        return SignatureFailure.STALE
    if not any(hmac_hex(secret, t, body) in v1s for secret in SECRETS):
        return SignatureFailure.MISMATCH
    return None


def timestamps(base: int) -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(base - 400, base + 400).map(str),
        st.sampled_from(
            [
                "",
                " ",
                "-1",
                "0",
                "1e9",
                "1764000000.5",
                "0x1",
                "١٧٦٤٠٠٠٠٠٠",  # Arabic-Indic digits: str.isdigit() says yes
                "\uff11\uff17\uff16\uff14",  # full-width digits
                str(base) + "\x00",
                "9" * 4000,  # a huge number; signing it correctly must still not overflow anything
                "00" + str(base),  # leading zeros: the text is what is signed
                str(base * 1000),  # milliseconds
            ]
        ),
        st.text(max_size=12),
    )


@st.composite
def signature_headers(draw: st.DrawFn, base: int = NOW) -> str | None:
    """Headers from nothing, through malformed, to well-formed and correctly signed."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(st.none(), st.text(max_size=80), st.just(""), st.just("x" * 5000)))
    t = draw(timestamps(base))
    items: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["t", "v1", "v1", "good_v1", "v0", "junk", "no_equals", "spaced"]))
        if kind == "t":
            items.append(f"t={draw(timestamps(base))}")
        elif kind == "v1":
            items.append(f"v1={draw(st.one_of(st.text(max_size=70), st.sampled_from(['', 'ABC', 'g' * 64])))}")
        elif kind == "good_v1":
            secret = draw(st.sampled_from([*SECRETS, "wrong-secret"]))
            digest = hmac_hex(secret, t)
            items.append(f"v1={digest.upper() if draw(st.booleans()) else digest}")
        elif kind == "v0":
            items.append(f"v0={hmac_hex(SECRETS[0], t)}")
        elif kind == "junk":
            items.append(draw(st.text(max_size=20)))
        elif kind == "no_equals":
            items.append("v1")
        else:
            items.append(f"  v1 = {hmac_hex(SECRETS[0], t)}  ")
    position = draw(st.integers(0, len(items)))
    if draw(st.integers(0, 4)) > 0:
        items.insert(position, f"t={t}")
    repeats = draw(st.sampled_from([1, 1, 1, 200]))  # many v1= entries
    return ",".join(items * repeats)


@settings(max_examples=300)
@given(header=signature_headers(), now=st.sampled_from([NOW, NOW + 300, NOW - 300, NOW + 301]))
@example(header=f"t={'9' * 4000},v1={hmac_hex(SECRETS[0], '9' * 4000)}", now=NOW)
@example(header=f"t=00{NOW},v1={hmac_hex(SECRETS[0], f'00{NOW}')}", now=NOW)
def test_the_verifier_accepts_exactly_a_valid_header_and_names_the_reason_otherwise(
    header: str | None, now: float
) -> None:
    expected = expected_reason(header, now)
    if expected is None:
        verify_signature(body=BODY, header=header, secrets=SECRETS, now=now, tolerance=TOLERANCE)
        return
    with pytest.raises(InvalidSignature) as refused:
        verify_signature(body=BODY, header=header, secrets=SECRETS, now=now, tolerance=TOLERANCE)
    assert refused.value.reason == expected, (header, refused.value.reason, expected)


@settings(max_examples=300)
@given(body=st.binary(max_size=300), flip=st.integers(min_value=0), bit=st.integers(0, 7))
def test_a_signed_body_verifies_and_any_single_bit_flip_of_it_does_not(body: bytes, flip: int, bit: int) -> None:
    header = f"t={NOW},v1={hmac_hex(SECRETS[1], str(NOW), body)}"
    verify_signature(body=body, header=header, secrets=SECRETS, now=NOW)
    if body:
        mutated = bytearray(body)
        mutated[flip % len(body)] ^= 1 << bit
        with pytest.raises(InvalidSignature) as refused:
            verify_signature(body=bytes(mutated), header=header, secrets=SECRETS, now=NOW)
        assert refused.value.reason == SignatureFailure.MISMATCH


@pytest.mark.django_db
@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=signature_headers(base=int(time.time())))
def test_the_webhook_answers_a_fuzzed_header_with_200_only_when_valid_else_401_with_the_reason(
    post_webhook: PostWebhook, settings, header: str | None
) -> None:
    settings.TERRA_WEBHOOK_SECRETS = SECRETS
    RawEvent.objects.all().delete()  # a valid header stores the body; the next would be a duplicate
    before = expected_reason(header, time.time())
    response = post_webhook(BODY, headers={} if header is None else {"terra-signature": header})
    after = expected_reason(header, time.time())
    assert response.status_code in (200, 401), (response.status_code, header)
    # A timestamp at the window's edge may cross it during the request: either answer is right.
    expected = before if before == after else None if response.status_code == 200 else after
    if expected is None:
        assert response.status_code == 200, (header, response.json())
    else:
        assert response.json() == {
            "error": "invalid_signature",
            "reason": expected.value,
            "request_id": response["x-amy-request-id"],
        }
        assert not RawEvent.objects.exists()
