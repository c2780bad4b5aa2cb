"""The core records and the ops app exposes: no module of `ingest` or `accounts` imports `admin_ops`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE_PACKAGES = ("ingest", "accounts")


def _imported_modules(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):  # function-level imports count too
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _core_modules() -> list[Path]:
    return sorted(path for package in CORE_PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_the_scan_finds_the_core_modules() -> None:
    paths = {path.relative_to(ROOT).as_posix() for path in _core_modules()}
    assert {"ingest/views.py", "ingest/services/processing.py", "accounts/views.py"} <= paths


def test_no_module_of_ingest_or_accounts_imports_admin_ops() -> None:
    offenders = {
        path.relative_to(ROOT).as_posix(): sorted(
            name for name in _imported_modules(path.read_text()) if name.split(".")[0] == "admin_ops"
        )
        for path in _core_modules()
    }
    assert {path: names for path, names in offenders.items() if names} == {}
