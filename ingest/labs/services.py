"""Lab uploads: create (row and stored file together), submit to Terra, delete; and the selectors.

The row and the stored object come and go together. `lab_upload_create` creates the row, stores
the file and sets its key in one transaction, and deletes the object again if the transaction does
not commit, so a storage outage leaves neither. `lab_upload_delete` deletes the object before the
row, under the row's lock: a storage outage then leaves both, and the user can retry.

Submission (`lab_upload_submit`, run by the `ingest.lab_upload_submit` task): the file is read
back from storage, HEIC is converted to JPEG (Terra does not take HEIC), the bytes are sent to
Terra, and Terra's upload id is stored through `lab_upload_set_terra_id`, which un-parks the lab
reports that arrived before it. An upload that has a Terra id is never sent again, and a
session-level advisory lock keeps two deliveries of the task from sending the same upload at once.

Lab reports waiting for their upload (the end of this module). A lab report may reach the webhook
before we know Terra's upload id (the submission task stores it only after Terra answers): such
an event is parked `no_lab_upload` under `reference_id` = the upload id, and
`lab_upload_set_terra_id` moves it back to `received` once the id is known.

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

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from functools import partial
from typing import IO, Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import Storage
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Prefetch, QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from accounts.models import User
from ingest.classify import LAB_REPORT
from ingest.labs import heic
from ingest.labs.sniff import HEIC, JPEG, KINDS_BY_CONTENT_TYPE, FileKind
from ingest.labs.upload import LabFile
from ingest.locks import advisory_xact_lock
from ingest.models import Biomarker, LabUpload, LabUploadStatus, RawEvent, RawEventState
from ingest.publish import publish_task
from ingest.queues import DEFAULT_QUEUE, LAB_SUBMIT_TASK
from ingest.services.connections import publish_later
from ingest.terra_client import TerraClient, TerraNotConfigured, TerraRejected, TerraUnavailable
from ingest.uploads import STORAGE_ERRORS, delete_quietly, is_missing, uploads_storage

logger = logging.getLogger(__name__)

_SAFE_KEY_PART = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


class LabStorageUnavailable(Exception):
    """The file store (S3 or the local disk) failed: worth a retry later."""


class LabFileUnreadable(Exception):
    """The stored file cannot be turned into something Terra takes: retrying will not help."""


def storage_key_for(*, user_id: str, lab_upload_id: int, kind: FileKind) -> str:
    """`labs/<user_id>/<lab_upload_id>/<random>.<ext>`: nothing in it comes from the client's file."""
    # Identity-provider subjects are plain (`user_2pQm...`); any other id is keyed by its digest so
    # that a key never holds a separator or a dot segment.
    user_part = user_id if user_id and set(user_id) <= _SAFE_KEY_PART else hashlib.sha256(user_id.encode()).hexdigest()
    return f"labs/{user_part}/{lab_upload_id}/{secrets.token_hex(16)}.{kind.extension}"


# Create -------------------------------------------------------------------------------------------


def lab_upload_create(
    *, user: User, file: LabFile, kind: FileKind, filename: str, request_id: str | None = None
) -> LabUpload:
    """The row (status `processing`) and the stored file; the submission task is queued on commit.

    Raises LabStorageUnavailable when the file cannot be stored: nothing is then left behind.
    """
    storage = uploads_storage()
    stored_name: str | None = None
    try:
        with transaction.atomic():
            lab_upload = LabUpload.objects.create(
                user=user,
                filename=filename,
                content_type=kind.content_type,
                size_bytes=file.size or 0,
                sha256=file.sha256,
                status=LabUploadStatus.PROCESSING,
            )
            key = storage_key_for(user_id=user.pk, lab_upload_id=lab_upload.pk, kind=kind)
            stored_name = _store(storage, key, file, kind)
            logger.info("lab upload %d stored (%s, %d bytes)", lab_upload.pk, kind.content_type, file.size)
            lab_upload.storage_key = stored_name
            LabUpload.objects.filter(pk=lab_upload.pk).update(storage_key=stored_name, updated_at=Now())
            transaction.on_commit(submit_later(lab_upload.pk, request_id), robust=True)
    except BaseException:
        if stored_name is not None:
            delete_quietly(storage, stored_name)
        raise
    return lab_upload


def _store(storage: Storage, key: str, file: LabFile, kind: FileKind) -> str:
    file.seek(0)
    content = File(file.file, name=key)
    # What S3 records as the object's type: the sniffed one, never what the client sent.
    content.content_type = kind.content_type  # type: ignore[attr-defined]
    try:
        return storage.save(key, content)
    except STORAGE_ERRORS as exc:
        logger.warning("lab file not stored: %s", type(exc).__name__)
        raise LabStorageUnavailable(str(type(exc).__name__)) from exc


def submit_later(lab_upload_id: int, request_id: str | None) -> Callable[[], None]:
    return partial(_send_submit, lab_upload_id, request_id)


def _send_submit(lab_upload_id: int, request_id: str | None) -> None:
    # A broker error must not fail a stored upload: logged, and the sweep resends it.
    publish_task(LAB_SUBMIT_TASK, {"lab_upload_id": lab_upload_id, "request_id": request_id}, queue=DEFAULT_QUEUE)


def lab_uploads_resubmit_stale(*, older_than: timedelta = timedelta(minutes=30), limit: int = 100) -> int:
    """Queue the submission again for uploads still waiting to be sent after `older_than`
    (a lost publish, or a worker lost mid-way); returns how many were queued. Safe to run at any
    time: a submission that is already done or under way is not repeated."""
    ids = list(
        LabUpload.objects.filter(
            status=LabUploadStatus.PROCESSING,
            terra_upload_id__isnull=True,
            submitted_at__isnull=True,
            created_at__lt=timezone.now() - older_than,
        )
        .exclude(storage_key="")
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    for lab_upload_id in ids:
        _send_submit(lab_upload_id, None)
    return len(ids)


# Submit -------------------------------------------------------------------------------------------


class SubmitOutcome(StrEnum):
    SUBMITTED = "submitted"
    ALREADY_SUBMITTED = "already_submitted"  # has a Terra id, or is not processing any more
    BUSY = "busy"  # another delivery is sending it right now
    GONE = "gone"  # deleted meanwhile
    FAILED = "failed"  # marked failed with a reason


@dataclass(frozen=True)
class Submission:
    filename: str
    content: bytes
    content_type: str


def lab_upload_submit(*, lab_upload_id: int, final_attempt: bool = True) -> SubmitOutcome:
    """Send one upload to Terra, once.

    Terra refusing the file, Terra not configured, a missing or unreadable file: the upload is
    marked failed with a readable reason. Terra or the store unavailable: TerraUnavailable or
    LabStorageUnavailable is raised for the task to retry, unless this is the final attempt, which
    marks the upload failed instead.
    """
    if not _try_submit_lock(lab_upload_id):
        logger.info("lab upload %d is being submitted by another worker", lab_upload_id)
        return SubmitOutcome.BUSY
    try:
        return _submit(lab_upload_id, final_attempt=final_attempt)
    finally:
        _submit_unlock(lab_upload_id)


def _submit(lab_upload_id: int, *, final_attempt: bool) -> SubmitOutcome:
    lab_upload = LabUpload.objects.filter(pk=lab_upload_id).first()
    if lab_upload is None:
        logger.info("lab upload %d no longer exists; not submitted", lab_upload_id)
        return SubmitOutcome.GONE
    if lab_upload.terra_upload_id or lab_upload.status != LabUploadStatus.PROCESSING:
        logger.info("lab upload %d already submitted or finished; not submitted again", lab_upload_id)
        return SubmitOutcome.ALREADY_SUBMITTED
    if not settings.TERRA_API_CONFIGURED:
        return _fail(lab_upload_id, "Terra is not configured on this server; the file was not sent for parsing.")
    try:
        submission = _submission_of(lab_upload)
        with TerraClient() as client:
            answer = client.submit_lab_report(
                reference_id=lab_upload.user_id,
                filename=submission.filename,
                content=submission.content,
                content_type=submission.content_type,
            )
    except LabFileUnreadable as exc:
        return _fail(lab_upload_id, str(exc))
    except TerraNotConfigured:
        return _fail(lab_upload_id, "Terra is not configured on this server; the file was not sent for parsing.")
    except TerraRejected as exc:
        return _fail(lab_upload_id, f"Terra refused the file (HTTP {exc.status}).")
    except (TerraUnavailable, LabStorageUnavailable) as exc:
        if not final_attempt:
            logger.warning("lab upload %d not submitted yet, will retry: %s", lab_upload_id, exc)
            raise
        what = "Terra was unavailable" if isinstance(exc, TerraUnavailable) else "The file store was unavailable"
        return _fail(lab_upload_id, f"{what}; gave up after several attempts ({exc}).")
    return _record_submission(lab_upload_id, answer)


def _record_submission(lab_upload_id: int, answer: dict[str, Any]) -> SubmitOutcome:
    terra_upload_id = str(answer["upload_id"])
    session_id = answer.get("session_id")
    try:
        with transaction.atomic():
            lab_upload_set_terra_id(
                lab_upload_id=lab_upload_id,
                terra_upload_id=terra_upload_id,
                terra_session_id=str(session_id) if isinstance(session_id, str | int) else None,
            )
            LabUpload.objects.filter(pk=lab_upload_id).update(submitted_at=Now(), error=None, updated_at=Now())
    except LabUpload.DoesNotExist:
        logger.info("lab upload %d was deleted while Terra received it (upload %s)", lab_upload_id, terra_upload_id)
        return SubmitOutcome.GONE
    except IntegrityError:
        logger.error("Terra answered upload id %s, already held by another lab upload", terra_upload_id)
        return _fail(lab_upload_id, "Terra answered with an upload id that is already in use.")
    logger.info("lab upload %d submitted to Terra as %s", lab_upload_id, terra_upload_id)
    return SubmitOutcome.SUBMITTED


def _fail(lab_upload_id: int, reason: str) -> SubmitOutcome:
    failed = LabUpload.objects.filter(pk=lab_upload_id, status=LabUploadStatus.PROCESSING).update(
        status=LabUploadStatus.FAILED, error=reason, updated_at=Now()
    )
    logger.warning("lab upload %d failed: %s", lab_upload_id, reason)
    if failed:
        _recheck_reports_without_upload_id(LabUpload.objects.filter(pk=lab_upload_id).values_list("user_id").first())
    return SubmitOutcome.FAILED


def _recheck_reports_without_upload_id(user: tuple[str] | None) -> None:
    """An upload that stops waiting may leave the one a parked report without upload id was for
    (the end of this module)."""
    if user is not None:
        lab_reports_unpark_for_user(user[0])


def _submission_of(lab_upload: LabUpload) -> Submission:
    kind = KINDS_BY_CONTENT_TYPE.get(lab_upload.content_type)
    if kind is None or not lab_upload.storage_key:
        raise LabFileUnreadable("The stored file is missing.")
    content = read_stored(lab_upload.storage_key)
    if kind == HEIC:
        content, kind = heic_to_jpeg(content), JPEG
    return Submission(
        filename=f"lab-report-{lab_upload.pk}.{kind.extension}", content=content, content_type=kind.content_type
    )


def read_stored(storage_key: str) -> bytes:
    """The stored bytes (at most AMY_LAB_MAX_BYTES). LabFileUnreadable when the object is gone,
    LabStorageUnavailable when the store does not answer."""
    try:
        with uploads_storage().open(storage_key, "rb") as stored:
            return stored.read(settings.AMY_LAB_MAX_BYTES + 1)
    except STORAGE_ERRORS as exc:
        if is_missing(exc):
            raise LabFileUnreadable("The stored file is missing.") from exc
        raise LabStorageUnavailable(type(exc).__name__) from exc


def heic_to_jpeg(content: bytes) -> bytes:
    """A HEIC image as JPEG (ingest/labs/heic.py). LabFileUnreadable when it cannot be decoded or
    has more pixels than AMY_HEIC_MAX_PIXELS (checked from its header, before decoding)."""
    try:
        return heic.heic_to_jpeg(content)
    except (heic.HeicTooLarge, heic.HeicUnreadable) as exc:
        raise LabFileUnreadable(str(exc)) from exc


def _lock_name(lab_upload_id: int) -> str:
    return f"lab_upload_submit:{lab_upload_id}"


def _try_submit_lock(lab_upload_id: int) -> bool:
    # Session-level, not transaction-level: no transaction stays open across the call to Terra.
    # A worker that dies drops its connection, and the lock with it.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [_lock_name(lab_upload_id)])
        return bool(cursor.fetchone()[0])


def _submit_unlock(lab_upload_id: int) -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [_lock_name(lab_upload_id)])
    except DatabaseError as exc:
        # The connection is broken: it is closed after the task, which releases the lock.
        logger.warning("lock of lab upload %d not released: %s", lab_upload_id, type(exc).__name__)


# Delete -------------------------------------------------------------------------------------------


def lab_upload_delete(*, user: User, lab_upload_id: int) -> bool:
    """Delete the stored file, then the upload and its biomarkers (cascade), and redact the
    report's ledger rows. False when the user has no such upload. Raises LabStorageUnavailable,
    leaving all, when the store fails."""
    storage = uploads_storage()
    with transaction.atomic():
        lab_upload = LabUpload.objects.select_for_update().filter(pk=lab_upload_id, user=user).first()
        if lab_upload is None:
            return False
        if lab_upload.terra_upload_id:
            _lab_reports_redact(lab_upload.terra_upload_id)
        if lab_upload.storage_key:
            try:
                storage.delete(lab_upload.storage_key)
            except STORAGE_ERRORS as exc:
                if not is_missing(exc):
                    logger.warning("lab file of upload %d not deleted: %s", lab_upload_id, type(exc).__name__)
                    raise LabStorageUnavailable(type(exc).__name__) from exc
        lab_upload.delete()
    logger.info("lab upload %d deleted", lab_upload_id)
    if lab_upload.status == LabUploadStatus.PROCESSING:
        _recheck_reports_without_upload_id((user.pk,))
    return True


def _lab_reports_redact(terra_upload_id: str) -> int:
    """The ledger rows of this upload's reports keep their metadata without payload (tombstones);
    those a worker has not reached yet are skipped rather than dead-lettered as payload erased.
    Under the upload id's lock, so a report being normalized or un-parked finishes first."""
    lab_upload_lock(terra_upload_id)
    reports = RawEvent.objects.filter(event_type=LAB_REPORT, reference_id=terra_upload_id)
    redacted = reports.exclude(payload=None).update(payload=None)
    reports.filter(state__in=[RawEventState.RECEIVED, RawEventState.PARKED]).update(
        state=RawEventState.SKIPPED, process_error="skipped:lab_upload_deleted", processed_at=Now(), lease_until=None
    )
    return redacted


# Selectors ----------------------------------------------------------------------------------------


def lab_upload_list(*, user: User, before_id: int | None, limit: int) -> list[LabUpload]:
    """Up to `limit` of the user's uploads, newest first, older than `before_id` when given."""
    uploads: QuerySet[LabUpload] = LabUpload.objects.filter(user=user)
    if before_id is not None:
        uploads = uploads.filter(pk__lt=before_id)
    return list(uploads.order_by("-pk")[:limit])


def lab_upload_get(*, user: User, lab_upload_id: int, with_biomarkers: bool = False) -> LabUpload | None:
    """The user's upload, or None: another user's upload is as absent as an unknown one.
    `with_biomarkers` prefetches its biomarkers, in the order they were written."""
    uploads: QuerySet[LabUpload] = LabUpload.objects.filter(pk=lab_upload_id, user=user)
    if with_biomarkers:
        uploads = uploads.prefetch_related(Prefetch("biomarkers", queryset=Biomarker.objects.order_by("pk")))
    return uploads.first()


def lab_file_open(*, lab_upload: LabUpload) -> IO[bytes]:
    """The stored file, opened for reading. LabFileUnreadable when it is gone."""
    try:
        return uploads_storage().open(lab_upload.storage_key, "rb")
    except STORAGE_ERRORS as exc:
        if is_missing(exc):
            raise LabFileUnreadable("The stored file is missing.") from exc
        raise LabStorageUnavailable(type(exc).__name__) from exc


def lab_file_url(*, lab_upload: LabUpload, content_disposition: str) -> str | None:
    """A short-lived pre-signed download URL when the store is S3 (None for local disk); S3 answers
    it with our Content-Disposition and the sniffed Content-Type, whatever the object says."""
    storage = uploads_storage()
    try:
        from storages.backends.s3 import S3Storage
    except ImportError:  # pragma: no cover - django-storages[s3] is a requirement
        return None
    if not isinstance(storage, S3Storage):
        return None
    return storage.url(
        lab_upload.storage_key,
        parameters={
            "ResponseContentDisposition": content_disposition,
            "ResponseContentType": lab_upload.content_type,
        },
    )


# Lab reports waiting for their upload ----------------------------------------------------------

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
