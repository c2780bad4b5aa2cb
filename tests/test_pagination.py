"""One `limit` parser and one cursor codec for every paged list (amy/pagination.py): a bad value is
400 `invalid_field` naming the parameter, whatever the list."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from amy.errors import ApiError
from amy.pagination import decode_cursor, encode_cursor, parse_limit
from ingest.json_object import NotAJsonObject, parse_json_object


def refused_field(call: Callable[..., object], *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ApiError) as caught:
        call(*args, **kwargs)
    assert caught.value.code == "invalid_field"
    return str((caught.value.details or {})["field"])


def test_a_cursor_decodes_to_the_object_it_was_made_of() -> None:
    body = {"before": 42, "ts": "2026-12-07T06:00:00+00:00"}
    assert decode_cursor(encode_cursor(body)) == body


@pytest.mark.parametrize(
    "raw",
    [
        "not base64!",
        base64.urlsafe_b64encode(b"[1, 2]").decode().rstrip("="),  # JSON, not an object
        base64.urlsafe_b64encode(b"{not json").decode().rstrip("="),
        base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="),  # not UTF-8
        "A" * 5000,  # past any cursor we hand out
    ],
)
def test_a_malformed_cursor_is_invalid_field_cursor(raw: str) -> None:
    assert refused_field(decode_cursor, raw) == "cursor"


@pytest.mark.parametrize(("raw", "expected"), [(None, 50), ("", 50), ("1", 1), ("200", 200)])
def test_limit_defaults_when_absent_and_is_taken_within_its_range(raw: str | None, expected: int) -> None:
    assert parse_limit(raw, default=50, maximum=200) == expected


@pytest.mark.parametrize("raw", ["0", "201", "-1", "1.5", "ten", "9" * 7])
def test_a_limit_out_of_range_or_not_an_integer_is_invalid_field_limit(raw: str) -> None:
    assert refused_field(parse_limit, raw, default=50, maximum=200) == "limit"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff", "not JSON: UnicodeDecodeError"),
        (b"{", "not JSON: JSONDecodeError"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON: RecursionError"),
        (b"[1]", "not a JSON object"),
    ],
)
def test_a_body_that_is_not_a_json_object_says_why(data: bytes, reason: str) -> None:
    with pytest.raises(NotAJsonObject) as caught:
        parse_json_object(data)
    assert caught.value.reason == reason


def test_a_json_object_comes_back_with_its_text() -> None:
    assert parse_json_object(b'{"type": "daily"}') == ('{"type": "daily"}', {"type": "daily"})
