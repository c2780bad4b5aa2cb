"""Lab uploads and the lab-report events waiting for them.

A lab report may reach the webhook before we know Terra's upload id (the submission task stores it
only after Terra answers): such an event is parked `no_lab_upload` under `reference_id` = the
upload id, and `lab_upload_set_terra_id` moves it back to `received` once the id is known.

Both sides take the same transaction-level advisory lock on the upload id before they look: the
normalizer's lookup and park commit under it, so the un-parking (which runs after the lock is
granted, in READ COMMITTED) either sees the parked row or the normalizer sees the id. Without it
an event parked by a transaction that commits just after the un-parking query would wait forever.

A report may also come without an upload id (Terra's current envelope makes it optional), with
only its session id and the `reference_id` we sent at submission (the user's id). The normalizer
then matches it by the session id when an earlier report of the session recorded it, else to the
user's upload waiting for its report when it is the only one (an upload still being sent counts:
its Terra id may not be stored yet). When it cannot, it parks the event with `reference_id` empty
and `user_id` set, under the user's lock; `lab_reports_unpark_for_user` moves such events back
whenever that can change the answer: an upload of the user gets its Terra id, or stops waiting
(its report, a failed submission, a delete).
Lock order: the user's lock before an upload id's, then the upload row.
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


def lab_user_lock(user_id: str) -> None:
    """Serialize, until the current transaction ends, matching reports that carry no upload id to
    this user's uploads, and un-parking them."""
    advisory_xact_lock(f"lab_user:{user_id}")


def lab_reports_unpark_for_user(user_id: str) -> list[int]:
    """Move the user's lab reports parked without an upload id back to `received` (nudged once the
    outermost transaction commits); returns their ids."""
    with transaction.atomic():
        lab_user_lock(user_id)
        ids = list(
            RawEvent.objects.filter(
                state=RawEventState.PARKED,
                reference_id="",
                event_type=LAB_REPORT,
                process_error=NO_LAB_UPLOAD,
                user_id=user_id,
            )
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if ids:
            RawEvent.objects.filter(pk__in=ids, state=RawEventState.PARKED).update(
                state=RawEventState.RECEIVED, queued_at=Now(), process_error=None, lease_until=None
            )
            logger.info("unparked %d lab reports without an upload id of user %s", len(ids), user_id)
            transaction.on_commit(publish_later(ids, None), robust=True)
    return ids


def lab_upload_set_terra_id(*, lab_upload_id: int, terra_upload_id: str, terra_session_id: str | None) -> list[int]:
    """Record Terra's ids of an upload and un-park the lab reports that arrived before them.

    Returns the ids of the un-parked raw events. Their nudges are published by this function once
    the outermost transaction commits (one broker connection for all of them); a failed publish is
    logged and leaves the rows `received` for the drain.
    Raises LabUpload.DoesNotExist for an unknown upload, and IntegrityError when another upload
    already has this Terra upload id.
    """
    with transaction.atomic():
        user_id = LabUpload.objects.filter(pk=lab_upload_id).values_list("user_id", flat=True).first()
        if user_id is not None:
            lab_user_lock(user_id)
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
        if user_id is not None:
            ids += lab_reports_unpark_for_user(user_id)
    return ids
