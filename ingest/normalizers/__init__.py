"""The normalizer registry: one function per event type, from a parsed payload to typed rows.

A data type's normalizer is its pure parser (payload in, rows out; `DataEvent`): the worker resolves
the owner and writes the rows (ingest/services/owners.py, ingest/services/processing.py). Any
other normalizer runs inside the worker's transaction and returns an Outcome. Both raise BadData
for a payload that can never normalize. Registering a type is one line here.
"""

from __future__ import annotations

from ingest.classify import UNKNOWN
from ingest.normalizers import (
    activity,
    athlete,
    body,
    daily,
    labs,
    lifecycle,
    menstruation,
    nutrition,
    s3_payload,
    sleep,
)
from ingest.normalizers.base import EventContext, Normalizer, Outcome, data_event, skipped

# Recorded and marked skipped:<type>: nothing to store by design.
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

DATA_TYPES: dict[str, Normalizer] = {
    "daily": data_event(daily.parse),
    "sleep": data_event(sleep.parse),
    "activity": data_event(activity.parse),
    "body": data_event(body.parse),
    "nutrition": data_event(nutrition.parse),
    "menstruation": data_event(menstruation.parse),
    "athlete": data_event(athlete.parse),
    "lab_report": labs.normalize,
    "s3_payload": s3_payload.normalize,
}


def _skip_type(context: EventContext) -> Outcome:
    return skipped(context.event_type)


def _skip_unknown_shape(context: EventContext) -> Outcome:
    return skipped("unknown_shape")


def _registry() -> dict[str, Normalizer]:
    registry: dict[str, Normalizer] = {UNKNOWN: _skip_unknown_shape}
    registry.update(dict.fromkeys(SKIPPED_TYPES, _skip_type))
    registry.update(DATA_TYPES)
    registry.update(lifecycle.NORMALIZERS)
    return registry


NORMALIZERS: dict[str, Normalizer] = _registry()


def normalizer_for(event_type: str) -> Normalizer:
    """Any other well-formed type is recorded and skipped."""
    return NORMALIZERS.get(event_type, _skip_type)
