"""Hypothesis strategies for Terra bodies: valid samples, boundary values and hostile input.

A body is built in two layers. `payloads()` draws a Python value: one of the Terra samples in
tests/fixtures/terra, then mutated (a leaf replaced by a boundary or hostile value, a key dropped,
a key added, a structure swapped for another type), or a wholly random JSON value. `json_texts()`
then writes that value as JSON text, and may splice in tokens `json.dumps` never writes but a
sender can (`NaN`, `Infinity`, `1e999`, thousands of digits, lone-surrogate escapes, deep nesting).
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import strategies as st

from tests.terra import SAMPLES, sample

SAMPLE_PAYLOADS: dict[str, dict[str, Any]] = {name: json.loads(sample(name)) for name in SAMPLES}

# The sample each Terra data type's parser is fuzzed from (a type may have several samples).
SAMPLES_BY_TYPE: dict[str, list[str]] = {}
for _name, _payload in SAMPLE_PAYLOADS.items():
    _type = _payload.get("type") or "lab_report"
    if _type in ("lab_report.completed", "lab_report.failed"):
        _type = "lab_report"
    SAMPLES_BY_TYPE.setdefault(_type, []).append(_name)

INT64 = 2**63 - 1
INT32 = 2**31 - 1

boundary_ints = st.sampled_from(
    [0, -1, 1, INT32, INT32 + 1, -INT32 - 1, -INT32 - 2, INT64, INT64 + 1, -INT64 - 1, -INT64 - 2, 2**53 + 1, 10**30]
)
huge_ints = st.integers(min_value=-(10**300), max_value=10**300)
boundary_floats = st.sampled_from(
    [0.0, -0.0, 1e308, -1e308, 5e-324, 1.7976931348623157e308, 2.2250738585072014e-308, 0.1, 1e-7, 9.2e18]
)
odd_strings = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "\ud800",
        "\udfff",
        "x\ud83dy",
        "\ufeff",
        "\u202e",
        "null",
        "NaN",
        "Infinity",
        "-Infinity",
        "1e999",
        "0x10",
        "\uff11\uff12\uff13",  # full-width digits: float() reads them
        "2026-11-23",
        "2026-11-23T07:04:11.000000+01:00",
        "2026-11-23T07:04:11.123456789+05:45",
        "2026-11-23T07:04:11Z",
        "0001-01-01T00:00:00+14:00",  # year 0 in UTC
        "9999-12-31T23:59:59-14:00",  # year 10000 in UTC
        "0001-01-01",
        "9999-12-31",
        "2026-02-30",
        "2026-11-23T25:00:00",
        "x" * 300,
        "x" * 70_000,
    ]
)
any_text = st.text(max_size=40)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    boundary_ints,
    huge_ints,
    st.integers(),
    boundary_floats,
    st.floats(allow_nan=True, allow_infinity=True),
    odd_strings,
    any_text,
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.one_of(any_text, odd_strings), children, max_size=5)
    ),
    max_leaves=25,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside `value` (dict keys and list indexes), the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(_paths(child, (*prefix, index)))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


def _drop(value: Any, path: tuple[Any, ...]) -> Any:
    if len(path) == 1:
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k != path[0]}
        return [v for i, v in enumerate(value) if i != path[0]]
    head = path[0]
    if isinstance(value, dict):
        return {**value, head: _drop(value[head], path[1:])}
    copy = list(value)
    copy[head] = _drop(copy[head], path[1:])
    return copy


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any], max_mutations: int = 4) -> dict[str, Any]:
    """`base` with up to `max_mutations` changes: replaced leaves, wrong types, dropped or extra keys."""
    value: Any = base
    for _ in range(draw(st.integers(0, max_mutations))):
        paths = [p for p in _paths(value) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "replace", "wrong_type", "drop", "add", "grow"]))
        if action == "replace":
            value = _replace(value, path, draw(scalars))
        elif action == "wrong_type":
            value = _replace(value, path, draw(st.sampled_from([[], {}, [None], {"": None}, True, "text", 7])))
        elif action == "drop":
            value = _drop(value, path)
        elif action == "add":
            target = _get(value, path[:-1])
            if isinstance(target, dict):
                value = _replace(
                    value, path[:-1], {**target, draw(st.one_of(any_text, odd_strings)): draw(json_values)}
                )
        else:  # a list made long: a record repeated, as a chunked backfill would send it
            target = _get(value, path[:-1])
            if isinstance(target, list) and target:
                value = _replace(value, path[:-1], target * draw(st.integers(2, 50)))
    return value


def sample_payloads(types: list[str] | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """A Terra sample (of one of `types`, or any), unchanged or mutated."""
    names = SAMPLES if types is None else [n for t in types for n in SAMPLES_BY_TYPE[t]]
    return st.sampled_from(names).flatmap(
        lambda name: st.one_of(st.just(SAMPLE_PAYLOADS[name]), mutated(SAMPLE_PAYLOADS[name]))
    )


def payloads() -> st.SearchStrategy[Any]:
    """Any top-level JSON value a sender could post: mostly Terra-shaped objects."""
    random_object = st.dictionaries(
        st.sampled_from(["type", "user", "data", "upload_id", "athlete", "new_user", "url"]) | any_text,
        json_values,
        max_size=6,
    )
    typed_object = st.fixed_dictionaries(
        {"type": st.sampled_from(sorted(SAMPLES_BY_TYPE)) | scalars, "user": json_values, "data": json_values}
    )
    return st.one_of(sample_payloads(), sample_payloads(), random_object, typed_object, json_values)


# JSON text: what json.dumps writes, and what it never writes ---------------------------------------

# Tokens Python's json.loads reads (NaN, Infinity, huge exponents become inf; 5000 digits and
# 100 000 brackets are refused) that a strict serializer would never emit.
HOSTILE_TOKENS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "1e308",
    "123456789012345678901234567890",
    "9" * 4301,  # past Python's int digit limit: ValueError in json.loads
    "-0",
    "0.0000000000000000000000000000001",
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"\\u0000"',
    '"\\ud83d\\ude00"',
    "[" * 50 + "]" * 50,
    "[" * 5_000 + "]" * 5_000,  # deeper than the recursion limit
    '{"a":' * 200 + "1" + "}" * 200,
]


def _encode(value: Any) -> str:
    # allow_nan writes float('nan') as the NaN token: the sender's choice, not ours.
    return json.dumps(value, allow_nan=True)


@st.composite
def json_texts(draw: st.DrawFn, values: st.SearchStrategy[Any] | None = None) -> bytes:
    """JSON text of a drawn payload, with a hostile token spliced in place of one of its values."""
    value = draw(values if values is not None else payloads())
    if not draw(st.booleans()):
        return _encode(value).encode("utf-8", "surrogatepass")
    marker = "__amy_fuzz_token__"
    paths = [p for p in _paths(value) if p]
    if paths:
        value = _replace(value, draw(st.sampled_from(paths)), marker)
        text = _encode(value).replace(json.dumps(marker), draw(st.sampled_from(HOSTILE_TOKENS)), 1)
    else:
        text = draw(st.sampled_from(HOSTILE_TOKENS))
    return text.encode("utf-8")


def huge_array_body(kind: str, count: int) -> bytes:
    """A body of `count` copies of one sample's first record (count chosen by the caller)."""
    payload = dict(SAMPLE_PAYLOADS[SAMPLES_BY_TYPE[kind][0]])
    payload["data"] = payload["data"][:1] * count
    return json.dumps(payload).encode()


def is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
