"""raw_event_ingest: a verified body into the ledger, exactly once, then a nudge after commit."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.db import connection

from ingest.classify import Classification
from ingest.models import RawEventSource, RawEventState
from ingest.publish import publish_after_commit

# ON CONFLICT DO NOTHING lets the unique key decide duplicates, including two deliveries of one
# body racing each other: the loser waits for the winner's commit and inserts nothing.
_INSERT_SQL = """
INSERT INTO raw_events (
    event_type, terra_user_id, reference_id, provider, payload, signature_verified, dedup_key,
    request_id, trace_id, terra_reference, ordering_ts, source, parent_id, user_id, import_id,
    state, attempts, replay_count
) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0, 0)
ON CONFLICT (event_type, terra_user_id, dedup_key) DO NOTHING
RETURNING id
"""


@dataclass(frozen=True)
class DeliveryHeaders:
    """Terra's delivery headers, kept on the row for correlation."""

    trace_id: str | None = None
    terra_reference: str | None = None
    ordering_ts: int | None = None


@dataclass(frozen=True)
class IngestResult:
    raw_event_id: int | None
    event_type: str

    @property
    def is_duplicate(self) -> bool:
        return self.raw_event_id is None


def dedup_key_for(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def raw_event_insert(
    *,
    body_text: str,
    dedup_key: str,
    classification: Classification,
    request_id: str,
    headers: DeliveryHeaders = DeliveryHeaders(),
    signature_verified: bool = True,
    source: str = RawEventSource.WEBHOOK,
    parent_id: int | None = None,
    user_id: str | None = None,
    import_id: int | None = None,
) -> int | None:
    """Insert one ledger row in the caller's transaction; None when the key already exists."""
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_SQL,
            [
                classification.event_type,
                classification.terra_user_id,
                classification.reference_id,
                classification.provider,
                body_text,
                signature_verified,
                dedup_key,
                request_id,
                headers.trace_id,
                headers.terra_reference,
                headers.ordering_ts,
                source,
                parent_id,
                user_id,
                import_id,
                RawEventState.RECEIVED,
            ],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def raw_event_ingest(
    *,
    body: bytes,
    body_text: str,
    classification: Classification,
    request_id: str,
    headers: DeliveryHeaders,
) -> IngestResult:
    """Store a verified webhook body; publish a nudge once the row is committed.

    Raises django.db.DatabaseError when the row could not be stored: the caller must then not
    answer 2xx, so that Terra delivers the body again.
    """
    # One INSERT in autocommit is its own transaction: no BEGIN/COMMIT round trips (the ingest
    # benchmark's largest database cost). on_commit then runs as soon as the INSERT has committed,
    # or at the outer commit when a caller wraps this in a transaction.
    raw_event_id = raw_event_insert(
        body_text=body_text,
        dedup_key=dedup_key_for(body),
        classification=classification,
        request_id=request_id,
        headers=headers,
    )
    if raw_event_id is not None:
        publish_after_commit(raw_event_id, request_id)
    return IngestResult(raw_event_id=raw_event_id, event_type=classification.event_type)
