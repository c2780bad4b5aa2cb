"""Ledger rows in the states the ops endpoints deal with, and the admin keys tests use."""

from __future__ import annotations

from typing import Any

from django.db.models.functions import Now

from ingest.models import RawEvent, RawEventState
from tests.ledger import store
from tests.terra import body_of

ADMIN_KEY = "test-admin-key"
READ_KEY = "test-read-key"
WRITE = {"x-admin-key": ADMIN_KEY, "x-admin-actor": "ops-alice"}
READ = {"x-admin-key": READ_KEY}


def dead(event_type: str = "daily", *, error: str = "retries_exhausted: boom", n: int = 0, **fields: Any) -> RawEvent:
    """A dead-lettered row of `event_type` (a distinct body per `n`)."""
    raw_event = store(body_of({"type": event_type, "user": {"user_id": f"tu-{n}"}, "data": [], "n": n}))
    RawEvent.objects.filter(pk=raw_event.pk).update(
        state=RawEventState.DEAD, process_error=error, dead_lettered_at=Now(), attempts=3, **fields
    )
    raw_event.refresh_from_db()
    return raw_event
