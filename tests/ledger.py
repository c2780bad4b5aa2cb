"""Ledger rows as the webhook stores them, for tests that drive the worker's service directly."""

from __future__ import annotations

import json

from ingest.classify import classify
from ingest.models import RawEvent
from ingest.services.processing import raw_event_process
from ingest.services.webhook import DeliveryHeaders, dedup_key_for, raw_event_insert


def store(body: bytes, *, ordering_ts: int | None = None) -> RawEvent:
    """Insert `body` as a verified webhook delivery (state `received`)."""
    raw_event_id = raw_event_insert(
        body_text=body.decode(),
        dedup_key=dedup_key_for(body),
        classification=classify(json.loads(body)),
        request_id="req_test",
        headers=DeliveryHeaders(ordering_ts=ordering_ts),
    )
    assert raw_event_id is not None
    return RawEvent.objects.get(pk=raw_event_id)


def process(raw_event: RawEvent, **kwargs: object) -> RawEvent:
    """One delivery of the row through the worker's service; the row as it is afterwards."""
    raw_event_process(raw_event_id=raw_event.pk, **kwargs)  # type: ignore[arg-type]
    raw_event.refresh_from_db()
    return raw_event


def deliver(body: bytes, *, ordering_ts: int | None = None) -> RawEvent:
    """Store and process `body`, as webhook and worker would."""
    return process(store(body, ordering_ts=ordering_ts))
