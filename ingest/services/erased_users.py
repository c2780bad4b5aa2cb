"""Late events of an erased account: recognized, emptied, and never acted on.

A webhook can arrive after its user's erasure (Terra retries for hours, and a connection made just
before DELETE /v1/me may post its `auth` later). Acting on it would create the user again, ask
Terra for a backfill, and keep a new copy of the person's data; the worker marks it
`skipped:user_erased` instead, and its ledger row keeps no payload (tests/ingest/test_erasure.py).
"""

from __future__ import annotations

from accounts.erasure import terra_user_erased, user_erased
from ingest.models import RawEvent

USER_ERASED = "user_erased"


def erased_user_event(*, raw_event_id: int, user_id: str, terra_user_id: str = "") -> bool:
    """True when the event names an erased account, by `user_id` (Terra's reference id) or by
    `terra_user_id` (a connection the erasure deleted); the event's payload is then redacted, in the
    caller's transaction (the worker marks the row in the same one)."""
    if not user_erased(user_id) and not terra_user_erased(terra_user_id):
        return False
    RawEvent.objects.filter(pk=raw_event_id).update(payload=None)
    return True
