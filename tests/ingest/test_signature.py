from __future__ import annotations

import hashlib
import hmac

import pytest

from ingest.signature import (
    InvalidSignature,
    SignatureFailure,
    compute_signature,
    parse_signature_header,
    signature_body_verify,
    signature_header,
    signature_header_check,
    verify_signature,
)

BODY = b'{"type": "sleep", "data": []}\n'
SECRET = "whsec-test"
NOW = 1_764_000_000


def verify(header: str | None, *, body: bytes = BODY, secrets: tuple[str, ...] = (SECRET,), now: float = NOW) -> None:
    verify_signature(body=body, header=header, secrets=secrets, now=now)


def failure(header: str | None, **kwargs: object) -> SignatureFailure:
    with pytest.raises(InvalidSignature) as caught:
        verify(header, **kwargs)  # type: ignore[arg-type]
    return caught.value.reason


def test_the_signature_is_hmac_sha256_over_t_dot_raw_body_in_lowercase_hex() -> None:
    expected = hmac.new(b"secret", b"1723808700.{}", hashlib.sha256).hexdigest()
    assert compute_signature(b"{}", "secret", 1723808700) == expected
    assert signature_header(b"{}", "secret", 1723808700) == f"t=1723808700,v1={expected}"


def test_a_valid_signature_passes() -> None:
    verify(signature_header(BODY, SECRET, NOW))


def test_spaces_after_commas_and_upper_case_hex_pass() -> None:
    mac = compute_signature(BODY, SECRET, NOW)
    verify(f"t={NOW}, v1={mac.upper()}")


def test_one_good_v1_among_bad_ones_passes() -> None:
    verify(f"t={NOW},v1={'0' * 64},v1={compute_signature(BODY, SECRET, NOW)},v1=zz")


def test_any_configured_secret_passes_for_rotation() -> None:
    header = signature_header(BODY, "old-secret", NOW)
    verify(header, secrets=("new-secret", "old-secret"))


@pytest.mark.parametrize("header", [None, "", "   "])
def test_a_missing_header_is_missing_header(header: str | None) -> None:
    assert failure(header) == SignatureFailure.MISSING_HEADER


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        f"v1={'a' * 64}",  # no t
        f"t={NOW}",  # no v1
        f"t={NOW},v0={'a' * 64}",  # only another scheme: never a downgrade
        f"t=abc,v1={'a' * 64}",
        f"t=-5,v1={'a' * 64}",
        f"t={NOW}.5,v1={'a' * 64}",
        "t=" + "9" * 5000 + ",v1=aa",
    ],
)
def test_a_malformed_header_is_malformed_header(header: str) -> None:
    assert failure(header) == SignatureFailure.MALFORMED_HEADER


def test_a_body_changed_by_one_byte_is_a_mismatch() -> None:
    header = signature_header(BODY, SECRET, NOW)
    assert failure(header, body=BODY.replace(b"sleep", b"sleeq")) == SignatureFailure.MISMATCH


def test_re_serialized_json_is_a_mismatch() -> None:
    header = signature_header(BODY, SECRET, NOW)
    assert failure(header, body=b'{"type":"sleep","data":[]}') == SignatureFailure.MISMATCH


def test_a_wrong_secret_is_a_mismatch() -> None:
    assert failure(signature_header(BODY, "other", NOW)) == SignatureFailure.MISMATCH


@pytest.mark.parametrize("offset", [-300, 300, 0])
def test_timestamps_within_300_seconds_either_way_pass(offset: int) -> None:
    verify(signature_header(BODY, SECRET, NOW + offset))


@pytest.mark.parametrize("offset", [-301, 301, 10**6])
def test_timestamps_beyond_300_seconds_either_way_are_stale(offset: int) -> None:
    assert failure(signature_header(BODY, SECRET, NOW + offset)) == SignatureFailure.STALE


def test_an_old_header_is_stale_whatever_its_digest_since_the_window_is_checked_before_the_body() -> None:
    assert failure(f"t={NOW - 10_000},v1={'0' * 64}") == SignatureFailure.STALE
    with pytest.raises(InvalidSignature) as caught:
        signature_header_check(f"t={NOW - 10_000},v1={'0' * 64}", now=NOW)
    assert caught.value.reason == SignatureFailure.STALE


def test_a_header_in_shape_and_window_passes_the_header_check_without_a_body() -> None:
    parsed = signature_header_check(signature_header(BODY, SECRET, NOW), now=NOW)
    signature_body_verify(body=BODY, parsed=parsed, secrets=(SECRET,))
    with pytest.raises(InvalidSignature) as caught:
        signature_body_verify(body=BODY + b" ", parsed=parsed, secrets=(SECRET,))
    assert caught.value.reason == SignatureFailure.MISMATCH


@pytest.mark.parametrize("digest", ["ab", "0" * 63, "0" * 65, "g" * 64, ""])
def test_a_header_whose_only_v1_is_no_sha256_hex_digest_is_malformed(digest: str) -> None:
    assert failure(f"t={NOW},v1={digest}") == SignatureFailure.MALFORMED_HEADER


def test_the_last_t_wins_like_terras_sdk() -> None:
    digest = "ab" * 32
    parsed = parse_signature_header(f"t=1,t={NOW},v1={digest}")
    assert parsed.timestamp == NOW
    assert parsed.signatures == (digest,)
