"""Terra `labs` events."""

from __future__ import annotations

from ingest.errors import BadData
from ingest.normalizers.base import EventContext, Outcome


def normalize(context: EventContext) -> Outcome:
    raise BadData("normalizer for 'labs' not implemented yet")
