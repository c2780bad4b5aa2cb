"""Terra `s3_payload` events."""

from __future__ import annotations

from ingest.errors import BadData
from ingest.normalizers.base import EventContext, Outcome


def normalize(context: EventContext) -> Outcome:
    raise BadData("normalizer for 's3_payload' not implemented yet")
