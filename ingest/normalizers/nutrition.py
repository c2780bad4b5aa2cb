"""Terra `nutrition` events into typed rows (pure: payload in, ParsedRows out)."""

from __future__ import annotations

from typing import Any

from ingest.errors import BadData
from ingest.normalizers.base import ParsedRows


def parse(payload: dict[str, Any]) -> ParsedRows:
    raise BadData("normalizer for 'nutrition' not implemented yet")
