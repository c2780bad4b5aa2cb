"""The normalizer registry: one function per event type, from a parsed payload to typed rows.

A normalizer runs inside the worker's transaction, writes its rows, and returns an Outcome; it
raises BadData for a payload that can never normalize. Registering a type is one line here.
"""

from __future__ import annotations

from ingest.classify import UNKNOWN
from ingest.errors import BadData
from ingest.normalizers import lifecycle
from ingest.normalizers.base import EventContext, Normalizer, Outcome, skipped

# Recorded and marked skipped:<type>: nothing to store by design (SPEC §3).
SKIPPED_TYPES = frozenset(
    {
        "auth_cancelled",
        "large_request_processing",
        "large_request_sending",
        "processing",
        "rate_limit_hit",
        "healthcheck",
        "google_no_datasource",
        "hormone",
        "planned_workout",
        "health_observation",
    }
)

# Typed data normalizers arrive with the normalizers issue; until then these events are
# dead-lettered visibly (and replayable once a normalizer exists), never dropped.
PENDING_TYPES = frozenset(
    {"daily", "sleep", "activity", "body", "nutrition", "menstruation", "athlete", "lab_report", "s3_payload"}
)


def _skip_type(context: EventContext) -> Outcome:
    return skipped(context.event_type)


def _skip_unknown_shape(context: EventContext) -> Outcome:
    return skipped("unknown_shape")


def _not_implemented(context: EventContext) -> Outcome:
    raise BadData(f"normalizer for {context.event_type!r} not implemented yet")


def _registry() -> dict[str, Normalizer]:
    registry: dict[str, Normalizer] = {UNKNOWN: _skip_unknown_shape}
    registry.update(dict.fromkeys(SKIPPED_TYPES, _skip_type))
    registry.update(dict.fromkeys(PENDING_TYPES, _not_implemented))
    registry.update(lifecycle.NORMALIZERS)
    return registry


NORMALIZERS: dict[str, Normalizer] = _registry()


def normalizer_for(event_type: str) -> Normalizer:
    """Any other well-formed type is recorded and skipped (SPEC §3)."""
    return NORMALIZERS.get(event_type, _skip_type)
