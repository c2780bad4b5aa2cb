"""An erased account's trace rows go with it (the core's `user_erased` signal, amy/signals.py)."""

from __future__ import annotations

from typing import Any

from django.db.models import Q

from admin_ops.models import TraceEvent

_DELETE_CHUNK = 5000


def traces_forget_user(
    sender: Any, *, user_id: str, terra_user_ids: list[str], raw_event_ids: list[int], **kwargs: Any
) -> int:
    """Trace rows naming the user, their Terra users or their ledger rows. trace_events has no
    index on terra_user_id: that part reads the table once, which an erasure can afford."""
    names_user = Q(user_id=user_id) | Q(terra_user_id__in=terra_user_ids)
    deleted, _ = TraceEvent.objects.filter(names_user).delete()
    for start in range(0, len(raw_event_ids), _DELETE_CHUNK):
        chunk = raw_event_ids[start : start + _DELETE_CHUNK]
        deleted += TraceEvent.objects.filter(raw_event_id__in=chunk).delete()[0]
    return deleted
