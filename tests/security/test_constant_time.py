"""Secrets are compared in constant time: read from the source,
since timing measurements are too noisy for a shared machine and banned from this suite.

The admin keys reach exactly one comparison, `hmac.compare_digest` over SHA-256 digests of both
sides (so neither the content nor the length leaks), and no `==`, `!=` or `in` anywhere in the
project touches them or the header a client sends; likewise every webhook `v1` is compared with
`hmac.compare_digest` only. The admin key is read from its header, never the query string.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live import ROOT

SOURCE_DIRS = ["amy", "accounts", "admin_ops", "ingest"]
ADMIN_KEY_SETTINGS = {"AMY_ADMIN_KEY", "AMY_ADMIN_READ_KEY"}
CONSTANT_TIME = {("hmac", "compare_digest"), ("secrets", "compare_digest"), ("crypto", "constant_time_compare")}


def source_files() -> Iterator[Path]:
    for directory in SOURCE_DIRS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def names_in(node: ast.AST) -> set[str]:
    """Attribute and variable names anywhere under `node`."""
    found = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Attribute):
            found.add(child.attr)
        elif isinstance(child, ast.Name):
            found.add(child.id)
    return found


def call_name(call: ast.Call) -> tuple[str, str] | None:
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.value.id, func.attr
    if isinstance(func, ast.Name):
        return "", func.id
    return None


def function(module: ast.Module, name: str) -> ast.FunctionDef:
    for node in ast.walk(module):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise AssertionError(f"no function {name}")


def test_no_equality_test_anywhere_touches_an_admin_key() -> None:
    offenders = []
    for path in source_files():
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Compare) and names_in(node) & (ADMIN_KEY_SETTINGS | {"ADMIN_KEY_HEADER"}):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"admin keys compared with ==/!=/in: {offenders}"


def test_every_use_of_an_admin_key_goes_through_the_constant_time_matcher() -> None:
    module = parse(ROOT / "admin_ops" / "auth.py")
    # Each reference to a key setting is an argument of _matches(...).
    for node in ast.walk(module):
        if isinstance(node, ast.Attribute) and node.attr in ADMIN_KEY_SETTINGS:
            callers = [
                call
                for call in ast.walk(module)
                if isinstance(call, ast.Call) and call_name(call) == ("", "_matches") and node in call.args
            ]
            assert callers, f"admin_ops/auth.py:{node.lineno} uses {node.attr} outside _matches"
    # No other module reads the keys at all.
    for path in source_files():
        if path.name == "auth.py" and path.parent.name == "admin_ops":
            continue
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Attribute) and node.attr in ADMIN_KEY_SETTINGS:
                pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno} reads {node.attr}")


def test_the_matcher_compares_sha256_digests_of_both_sides_with_compare_digest() -> None:
    matcher = function(parse(ROOT / "admin_ops" / "auth.py"), "_matches")
    compares = [c for c in ast.walk(matcher) if isinstance(c, ast.Call) and call_name(c) in CONSTANT_TIME]
    assert len(compares) == 1, "the matcher must compare with a constant-time function"
    digests = [
        arg
        for arg in compares[0].args
        if any(isinstance(c, ast.Call) and call_name(c) == ("hashlib", "sha256") for c in ast.walk(arg))
    ]
    assert len(digests) == 2, "both sides are hashed first, so the length does not leak"
    assert not [c for c in ast.walk(matcher) if isinstance(c, ast.Compare)]


def test_the_admin_key_is_read_from_its_header_only_never_the_query_string() -> None:
    module = parse(ROOT / "admin_ops" / "auth.py")
    assert not names_in(module) & {"query_params", "GET", "QUERY_STRING"}


def test_webhook_signatures_are_compared_with_compare_digest_only() -> None:
    verify = function(parse(ROOT / "ingest" / "signature.py"), "signature_body_verify")
    assert [c for c in ast.walk(verify) if isinstance(c, ast.Call) and call_name(c) in CONSTANT_TIME]
    for node in ast.walk(verify):
        if isinstance(node, ast.Compare):
            assert not names_in(node) & {"candidate", "digest", "expected", "signatures"}, ast.unparse(node)
