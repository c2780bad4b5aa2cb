"""Lab uploads and the lab-report events waiting for them.

A lab report may reach the webhook before we know Terra's upload id (the submission task stores it
only after Terra answers): such an event is parked `no_lab_upload` under `reference_id` = the
upload id, and `lab_upload_set_terra_id` moves it back to `received` once the id is known.

Both sides take the same transaction-level advisory lock on the upload id before they look: the
normalizer's lookup and park commit under it, so the un-parking (which runs after the lock is
granted, in READ COMMITTED) either sees the parked row or the normalizer sees the id. Without it
an event parked by a transaction that commits just after the un-parking query would wait forever.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models.functions import Now

from ingest.locks import advisory_xact_lock
from ingest.models import LabUpload, RawEvent, RawEventState
from ingest.services.connections import publish_later

logger = logging.getLogger(__name__)

LAB_REPORT = "lab_report"
NO_LAB_UPLOAD = "no_lab_upload"


def lab_upload_lock(terra_upload_id: str) -> None:
    """Serialize, until the current transaction ends, everything that looks up this upload id."""
    advisory_xact_lock(f"lab_upload:{terra_upload_id}")


def lab_upload_set_terra_id(*, lab_upload_id: int, terra_upload_id: str, terra_session_id: str | None) -> list[int]:
    """Record Terra's ids of an upload and un-park the lab reports that arrived before them.

    Returns the ids of the un-parked raw events. Their nudges are published by this function once
    the outermost transaction commits (one broker connection for all of them); a failed publish is
    logged and leaves the rows `received` for the drain.
    Raises LabUpload.DoesNotExist for an unknown upload, and IntegrityError when another upload
    already has this Terra upload id.
    """
    with transaction.atomic():
        lab_upload_lock(terra_upload_id)
        updated = LabUpload.objects.filter(pk=lab_upload_id).update(
            terra_upload_id=terra_upload_id, terra_session_id=terra_session_id, updated_at=Now()
        )
        if not updated:
            raise LabUpload.DoesNotExist(f"lab upload {lab_upload_id} does not exist")
        # The filter (state = parked, reference_id = ...) is served by raw_events_parked_ref_idx.
        ids = list(
            RawEvent.objects.filter(
                state=RawEventState.PARKED,
                reference_id=terra_upload_id,
                event_type=LAB_REPORT,
                process_error=NO_LAB_UPLOAD,
            )
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if ids:
            RawEvent.objects.filter(pk__in=ids, state=RawEventState.PARKED).update(
                state=RawEventState.RECEIVED, queued_at=Now(), process_error=None, lease_until=None
            )
            logger.info("unparked %d lab reports of lab upload %d", len(ids), lab_upload_id)
            transaction.on_commit(publish_later(ids, None), robust=True)
    return ids
