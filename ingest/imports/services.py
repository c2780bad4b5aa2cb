"""Imports: the upload, the job run, and the requeue of jobs whose message was lost.

The upload (`ImportSpool`, `import_job_create`)
    The body or the multipart file is spooled (memory, then a temporary file) while it is counted:
    past AMY_IMPORT_MAX_BYTES the upload stops and nothing is stored. The job's id is taken from
    its sequence first, the file is stored under `imports/<user>/<job id>.<json|ndjson>` in the
    `uploads` storage, then the row is inserted (status `pending`) and the task is published after
    commit. No transaction is held open while the file travels to S3; a crash in between leaves an
    orphan object, never a row without its file.

What an entry must be to enter the ledger (`entry_classify`)
    A JSON object that `classify()` recognizes as a Terra event with a well-formed `type`, or a lab
    report by shape. Rejected, each with its error: entries that are not JSON, not objects, or of
    no recognizable shape (`unknown`); connection lifecycle events (`auth`, `deauth`, `user_reauth`,
    `access_revoked`, `permission_change`, `connection_error`) — they act on a connection by the
    Terra user or reference id they name, whoever imports them, so importing one could take over
    or cut off another user's connection; `s3_payload` pings (their links expire, and fetching a
    user-given URL from our network is not something an import may ask for); lab reports for a
    Terra upload id that is not one of the importer's own lab uploads (the lab normalizer writes
    biomarkers for the upload's owner). Types the worker records and skips (`healthcheck`,
    `hormone` ...) are Terra payloads and are accepted: the worker marks them `skipped:<type>`.

The ledger row
    `raw_event_insert` with `source = "import"`, `user_id` = the importer (the owner of the rows,
    whatever Terra user the payload names), `import_id` = the job, `signature_verified = false`,
    the job's request id, and the webhook's dedup: `sha256` of the entry's bytes as they appear in
    the file (for a JSON array, the element's text from its first to its last character; for
    NDJSON, the line without its line break and surrounding blanks). A webhook body imported byte
    for byte, one per line, is therefore a duplicate of the row the webhook stored.

The run (`import_job_process`, the `ingest.import_job_run` task, queue `amy`)
    1. A session advisory lock on the job: one delivery at a time; a second one waits a few
       seconds (a killed worker's session takes a moment to end) and is then dropped, because the
       holder's own unacknowledged message stands for the job (acks_late).
    2. The delivery is counted (`attempts`) and committed before any work. More than
       AMY_MAX_DELIVERIES deliveries since the last checkpoint (a poison file that kills its
       worker every time) fails the job `max_deliveries`.
    3. Batches of AMY_IMPORT_BATCH_SIZE entries (default 500): the batch's ledger rows, the
       counters and the checkpoint (`position` = entries consumed, `byte_offset` = where the next
       one starts) commit in one transaction, so counters advance only with the checkpoint and come
       out exact when a dead worker's job resumes: entries past the checkpoint were rolled back and
       are read again. Accepted rows are published to `terra-events` after the commit, one
       connection per batch; a lost publish leaves them to the drain.
    4. After AMY_IMPORT_SLICE_SECONDS (default half the task time limit) the delivery stops at a
       batch boundary and publishes a continuation, so an import never runs into the time limit.
    5. The end: `completed`; or `failed` when the file cannot be read (missing, not UTF-8, not JSON,
       an array that breaks off: entries before the break stay imported), when AMY_MAX_RETRIES
       retries of a transient failure (database, storage) are spent, or at the delivery cap. A
       failed job is dead-lettered like a raw event: a copy goes to `terra-events-dlq`.
    6. Once the job has ended, either way, its stored file is deleted (the job keeps its counters
       and errors); a delete the store refused is tried again by the drain.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from functools import partial
from typing import IO, Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import Storage
from django.db import DatabaseError, connection, transaction
from django.db.models import F
from django.db.models.functions import Now

from accounts.models import User
from ingest.classify import LAB_REPORT, UNKNOWN, Classification, classify
from ingest.imports.reader import BOM, Entry, ReaderError, iter_entries
from ingest.models import ImportFormat, ImportJob, ImportJobStatus, LabUpload, RawEventSource
from ingest.publish import publish_dead_letter_copy, publish_raw_events, publish_task
from ingest.queues import DEFAULT_QUEUE, IMPORT_RUN_TASK
from ingest.services.processing import retry_countdown
from ingest.services.webhook import dedup_key_for, raw_event_insert
from ingest.uploads import STORAGE_ERRORS, delete_quietly, is_missing, uploads_storage

logger = logging.getLogger(__name__)

IMPORT_TASK = IMPORT_RUN_TASK
IMPORT_QUEUE = DEFAULT_QUEUE
UNFINISHED = (ImportJobStatus.PENDING, ImportJobStatus.PROCESSING)
ENDED = (ImportJobStatus.COMPLETED, ImportJobStatus.FAILED)

# Connection lifecycle events act on the connection they name, not on the importer's data.
CONNECTION_EVENT_TYPES = frozenset(
    {"auth", "deauth", "user_reauth", "access_revoked", "permission_change", "connection_error"}
)
S3_PAYLOAD = "s3_payload"

_MAX_ERROR_LENGTH = 2000
_LOCK_WAIT_SECONDS = 5.0
_SAFE_KEY_PART = re.compile(r"[A-Za-z0-9_-]{1,128}")
_JSON_WHITESPACE = b" \t\r\n"


class ImportTooLarge(Exception):
    """The upload went past AMY_IMPORT_MAX_BYTES."""


class ImportStorageUnavailable(Exception):
    """The file store failed while the upload was being stored."""


def batch_size_setting() -> int:
    return max(1, int(settings.AMY_IMPORT_BATCH_SIZE))


def slice_seconds_setting() -> float:
    return float(settings.AMY_IMPORT_SLICE_SECONDS)


# The upload ---------------------------------------------------------------------------------------


class ImportSpool:
    """An upload as it arrives: counted against the cap, spooled to a temporary file past
    FILE_UPLOAD_MAX_MEMORY_SIZE, its format read from its first non-blank byte."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by close()
            max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, dir=settings.FILE_UPLOAD_TEMP_DIR
        )
        self._first: bytes | None = None

    def write(self, chunk: bytes) -> None:
        if self.size + len(chunk) > self.max_bytes:
            self.size += len(chunk)
            raise ImportTooLarge
        if self._first is None:
            head = chunk[len(BOM) :] if self.size == 0 and chunk.startswith(BOM) else chunk
            stripped = head.lstrip(_JSON_WHITESPACE)
            if stripped:
                self._first = stripped[:1]
        self.size += len(chunk)
        self.file.write(chunk)

    @property
    def format(self) -> ImportFormat | None:
        """`json` for an array, `ndjson` for objects one per line, None for anything else."""
        if self._first == b"[":
            return ImportFormat.JSON
        if self._first == b"{":
            return ImportFormat.NDJSON
        return None

    def close(self) -> None:
        self.file.close()


def storage_key_for(*, user_id: str, import_job_id: int, fmt: str) -> str:
    """`imports/<user_id>/<job id>.<json|ndjson>`; an id that is not plain is keyed by its digest,
    so a key never holds a separator or a dot segment."""
    user_part = user_id if _SAFE_KEY_PART.fullmatch(user_id) else hashlib.sha256(user_id.encode()).hexdigest()
    return f"imports/{user_part}/{import_job_id}.{fmt}"


def _next_job_id() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence('import_jobs', 'id'))")
        return int(cursor.fetchone()[0])


def import_job_create(*, user: User, spool: ImportSpool, request_id: str | None = None) -> ImportJob:
    """Store the spooled file and create its job (`pending`); the run is published after commit.

    Raises ImportStorageUnavailable when the file cannot be stored (nothing is then left), and
    DatabaseError when the row cannot be inserted (the stored file is deleted again).
    """
    fmt = spool.format
    if fmt is None:
        raise ValueError("the spool holds no JSON array or NDJSON")
    storage = uploads_storage()
    job_id = _next_job_id()
    key = storage_key_for(user_id=user.pk, import_job_id=job_id, fmt=fmt)
    spool.file.seek(0)
    content = File(spool.file, name=key)
    content.content_type = "application/json" if fmt == ImportFormat.JSON else "application/x-ndjson"  # type: ignore[attr-defined]
    try:
        stored_name = storage.save(key, content)
    except STORAGE_ERRORS as exc:
        logger.warning("import file not stored: %s", type(exc).__name__)
        raise ImportStorageUnavailable(type(exc).__name__) from exc
    try:
        with transaction.atomic():
            job = ImportJob.objects.create(
                id=job_id,
                user=user,
                storage_key=stored_name,
                format=fmt,
                size_bytes=spool.size,
                request_id=request_id or "",
            )
            transaction.on_commit(partial(publish_import_job, job_id, request_id), robust=True)
    except BaseException:
        delete_quietly(storage, stored_name)
        raise
    logger.info("import %d stored (%s, %d bytes)", job_id, fmt, spool.size)
    return job


def publish_import_job(import_job_id: int, request_id: str | None = None) -> bool:
    """Queue a run of the job; False when the broker failed (the job waits for the requeue)."""
    return publish_task(IMPORT_TASK, {"import_job_id": import_job_id, "request_id": request_id}, queue=IMPORT_QUEUE)


def import_jobs_requeue(*, idle_seconds: float | None = None, limit: int = 100) -> list[int]:
    """Publish a run for every unfinished job untouched for `idle_seconds` (default: twice the task
    time limit): a lost publish, or a message lost with Redis. Safe at any time: a job that is
    running or done is not run twice. Returns the ids."""
    idle = idle_seconds if idle_seconds is not None else 2 * settings.AMY_TASK_TIME_LIMIT
    ids = list(
        ImportJob.objects.filter(status__in=UNFINISHED, updated_at__lt=Now() - timedelta(seconds=idle))
        .order_by("updated_at", "id")
        .values_list("pk", flat=True)[:limit]
    )
    for import_job_id in ids:
        publish_import_job(import_job_id, None)
    if ids:
        logger.info("requeued %d idle imports", len(ids))
    return ids


# The stored file ----------------------------------------------------------------------------------


def import_file_delete(import_job_id: int) -> bool:
    """Delete the stored file of an ended job (its counters and errors stay) and clear its key.
    True when no file is left; False when the store failed (`import_files_delete_ended` tries
    again). A file is only needed while its job runs: keeping it would keep the person's data."""
    key = (
        ImportJob.objects.filter(pk=import_job_id, status__in=ENDED)
        .exclude(storage_key="")
        .values_list("storage_key", flat=True)
        .first()
    )
    if key is None:
        return True
    try:
        uploads_storage().delete(key)
    except STORAGE_ERRORS as exc:
        if not is_missing(exc):
            logger.warning("file of import %d not deleted: %s", import_job_id, type(exc).__name__)
            return False
    ImportJob.objects.filter(pk=import_job_id, storage_key=key).update(storage_key="")
    return True


def import_files_delete_ended(*, limit: int = 100) -> int:
    """Delete the files of ended jobs still holding one (their delete failed when they ended);
    returns how many went. For the periodic drain."""
    ids = list(
        ImportJob.objects.filter(status__in=ENDED)
        .exclude(storage_key="")
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    return sum(import_file_delete(import_job_id) for import_job_id in ids)


# Entries ------------------------------------------------------------------------------------------


def entry_classify(value: Any) -> Classification | str:
    """The entry's classification when it may enter the ledger, else why not (before ownership
    checks, which need the database)."""
    if not isinstance(value, dict):
        return "not a JSON object"
    classification = classify(value)
    event_type = classification.event_type
    if event_type == UNKNOWN:
        return "not a Terra payload: no `type`, and not a lab report (`upload_id` with a `data` array)"
    if event_type in CONNECTION_EVENT_TYPES:
        return f"`{event_type}` is a connection event: connection events cannot be imported"
    if event_type == S3_PAYLOAD:
        return "`s3_payload` cannot be imported: import the payload its link points to"
    return classification


class EntryOutcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


# The run ------------------------------------------------------------------------------------------


class ImportRunStatus(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    CONTINUED = "continued"  # a slice is done; a continuation is queued
    RETRY = "retry"  # a transient failure; the caller schedules the retry
    BUSY = "busy"  # another delivery holds the job
    NOT_CLAIMED = "not_claimed"  # finished already, or unknown


@dataclass(frozen=True)
class ImportRunResult:
    status: ImportRunStatus
    attempts: int = 0
    retry_in: float | None = None


class _Unreadable(Exception):
    """The stored file cannot be read: the job fails."""


class _Stale(Exception):
    """The job changed under this delivery (deleted, or finished by another): stop quietly."""


_CLAIM_SQL = """
UPDATE import_jobs
SET attempts = attempts + 1, status = 'processing', started_at = COALESCE(started_at, now()), updated_at = now()
WHERE id = %s AND status IN ('pending', 'processing')
RETURNING attempts, checkpoint_attempt
"""


@contextmanager
def _job_lock(import_job_id: int) -> Iterator[bool]:
    """A session advisory lock on the job for this delivery; yields whether it was obtained.

    It ends with the session, so a worker that dies lets go at once, without a lease to run out.
    """
    name = f"import_job:{import_job_id}"
    deadline = time.monotonic() + _LOCK_WAIT_SECONDS
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [name])
            locked = bool(cursor.fetchone()[0])
            if locked or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    if not locked:
        yield False
        return
    try:
        yield True
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [name])
        except DatabaseError:
            connection.close()  # the session ends, and its locks with it


def _claim(import_job_id: int) -> tuple[int, int] | None:
    """Count a delivery, committed before any work; (attempts, checkpoint_attempt) or None."""
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [import_job_id])
        row = cursor.fetchone()
    return (row[0], row[1]) if row else None


def _dlq_message(job: ImportJob) -> dict[str, object]:
    return {
        "import_job_id": job.pk,
        "user_id": job.user_id,
        "status": job.status,
        "error": job.error,
        "attempts": job.attempts,
        "total": job.total,
        "accepted": job.accepted,
        "duplicates": job.duplicates,
        "rejected": job.rejected,
        "request_id": job.request_id,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def import_job_fail(*, import_job_id: int, error: str, attempts: int | None = None) -> bool:
    """Mark an unfinished job `failed`; a copy goes to terra-events-dlq after commit.

    With `attempts`, only the delivery holding that count may do it. Returns whether it did.
    """
    jobs = ImportJob.objects.filter(pk=import_job_id, status__in=UNFINISHED)
    if attempts is not None:
        jobs = jobs.filter(attempts=attempts)
    with transaction.atomic():
        updated = jobs.update(
            status=ImportJobStatus.FAILED, error=error[:_MAX_ERROR_LENGTH], finished_at=Now(), updated_at=Now()
        )
        if updated:
            job = ImportJob.objects.get(pk=import_job_id)
            transaction.on_commit(partial(publish_dead_letter_copy, _dlq_message(job)), robust=True)
            transaction.on_commit(partial(import_file_delete, import_job_id), robust=True)
    if updated:
        logger.warning("import %d failed: %s", import_job_id, error)
    return bool(updated)


def open_stored(storage: Storage, name: str, offset: int) -> Any:
    """The stored file as a stream with `read(n)` and `close()`, from byte `offset`.

    On S3 an object is read as it downloads, from `offset` with a range request (django-storages'
    own file object would download it whole, in memory, first); elsewhere the file is opened and
    sought.
    """
    bucket = getattr(storage, "bucket", None)
    normalize = getattr(storage, "_normalize_name", None)
    if bucket is not None and normalize is not None:
        from storages.utils import clean_name

        s3_object = bucket.Object(normalize(clean_name(name)))
        response = s3_object.get(Range=f"bytes={offset}-") if offset else s3_object.get()
        return response["Body"]
    stream = storage.open(name, "rb")
    if offset:
        stream.seek(offset)
    return stream


class _EmptyStream:
    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        pass


@dataclass
class _Run:
    """One delivery's work on one job."""

    job: ImportJob
    attempts: int
    request_id: str | None
    batch_size: int
    deadline: float
    errors: list[dict[str, Any]] = field(default_factory=list)
    _own_lab_uploads: dict[str, bool] = field(default_factory=dict)

    def go(self) -> bool:
        """Import batches from the checkpoint; True when the file is done, False when the slice is."""
        self.errors = list(self.job.errors or [])
        stream = self._open()
        try:
            entries = iter_entries(stream.read, self.job.format, offset=self.job.byte_offset, index=self.job.position)
            return self._batches(entries)
        finally:
            stream.close()

    def _open(self) -> Any:
        if self.job.byte_offset >= self.job.size_bytes > 0:
            return _EmptyStream()  # every byte consumed; only the ending is left
        try:
            return open_stored(uploads_storage(), self.job.storage_key, self.job.byte_offset)
        except STORAGE_ERRORS as exc:
            if is_missing(exc):
                raise _Unreadable("the stored file is missing") from exc
            raise

    def _batches(self, entries: Iterator[Entry]) -> bool:
        batch: list[Entry] = []
        committed = False
        try:
            for entry in entries:
                # The slice ends between batches, once this delivery has made progress, and only
                # when an entry is left: a file that is done completes in the same delivery.
                if not batch and committed and time.monotonic() >= self.deadline:
                    return False
                batch.append(entry)
                if len(batch) >= self.batch_size:
                    self._commit(batch)
                    batch = []
                    committed = True
        except ReaderError:
            if batch:
                self._commit(batch)  # the entries before the break are imported
            raise
        if batch:
            self._commit(batch)
        return True

    def _commit(self, batch: list[Entry]) -> None:
        counts = dict.fromkeys(EntryOutcome, 0)
        new_errors: list[dict[str, Any]] = []
        accepted_ids: list[int] = []
        with transaction.atomic():
            for entry in batch:
                outcome, raw_event_id, error = self._ingest(entry)
                counts[outcome] += 1
                if raw_event_id is not None:
                    accepted_ids.append(raw_event_id)
                if error is not None and len(self.errors) + len(new_errors) < ImportJob.MAX_ERRORS:
                    new_errors.append({"index": entry.index, "error": error})
            updated = ImportJob.objects.filter(
                pk=self.job.pk, attempts=self.attempts, status=ImportJobStatus.PROCESSING
            ).update(
                total=F("total") + len(batch),
                accepted=F("accepted") + counts[EntryOutcome.ACCEPTED],
                duplicates=F("duplicates") + counts[EntryOutcome.DUPLICATE],
                rejected=F("rejected") + counts[EntryOutcome.REJECTED],
                errors=self.errors + new_errors,
                position=batch[-1].index + 1,
                byte_offset=batch[-1].end,
                checkpoint_attempt=self.attempts,
                updated_at=Now(),
            )
            if not updated:
                raise _Stale
            if accepted_ids:
                transaction.on_commit(partial(publish_raw_events, accepted_ids, self.request_id), robust=True)
        self.errors += new_errors
        self.job.position, self.job.byte_offset = batch[-1].index + 1, batch[-1].end

    def _ingest(self, entry: Entry) -> tuple[EntryOutcome, int | None, str | None]:
        if entry.error is not None or entry.text is None:
            return EntryOutcome.REJECTED, None, entry.error or "not UTF-8 text"
        verdict = entry_classify(entry.value)
        if isinstance(verdict, str):
            return EntryOutcome.REJECTED, None, verdict
        if verdict.event_type == LAB_REPORT and not self._owns_lab_upload(verdict.reference_id):
            return EntryOutcome.REJECTED, None, "a lab report for an upload that is not one of your lab uploads"
        raw_event_id = raw_event_insert(
            body_text=entry.text,
            dedup_key=dedup_key_for(entry.raw),
            classification=verdict,
            request_id=self.request_id or "",
            signature_verified=False,
            source=RawEventSource.IMPORT,
            user_id=self.job.user_id,
            import_id=self.job.pk,
        )
        if raw_event_id is None:
            return EntryOutcome.DUPLICATE, None, None
        return EntryOutcome.ACCEPTED, raw_event_id, None

    def _owns_lab_upload(self, terra_upload_id: str) -> bool:
        if not terra_upload_id:
            return False
        if terra_upload_id not in self._own_lab_uploads:
            self._own_lab_uploads[terra_upload_id] = LabUpload.objects.filter(
                user_id=self.job.user_id, terra_upload_id=terra_upload_id
            ).exists()
        return self._own_lab_uploads[terra_upload_id]


def _complete(import_job_id: int, attempts: int) -> bool:
    updated = ImportJob.objects.filter(pk=import_job_id, attempts=attempts, status=ImportJobStatus.PROCESSING).update(
        status=ImportJobStatus.COMPLETED, finished_at=Now(), updated_at=Now()
    )
    return bool(updated)


def import_job_process(
    *,
    import_job_id: int,
    request_id: str | None = None,
    retries: int = 0,
    batch_size: int | None = None,
    slice_seconds: float | None = None,
) -> ImportRunResult:
    """One delivery of an import job (see the module docstring). Never raises for the job's own
    failures; RETRY asks the caller to schedule a retry after `retry_in` seconds."""
    with _job_lock(import_job_id) as locked:
        if not locked:
            logger.info("import %d is held by another delivery; this one is dropped", import_job_id)
            return ImportRunResult(ImportRunStatus.BUSY)
        result = _process_locked(
            import_job_id=import_job_id,
            request_id=request_id,
            retries=retries,
            batch_size=batch_size or batch_size_setting(),
            slice_seconds=slice_seconds or slice_seconds_setting(),
        )
    if result.status == ImportRunStatus.CONTINUED:
        # Published once the lock is released, so the continuation does not wait for it.
        publish_import_job(import_job_id, request_id)
    return result


def _process_locked(
    *, import_job_id: int, request_id: str | None, retries: int, batch_size: int, slice_seconds: float
) -> ImportRunResult:
    claimed = _claim(import_job_id)
    if claimed is None:
        logger.info("import %d not claimed (finished, or unknown)", import_job_id)
        return ImportRunResult(ImportRunStatus.NOT_CLAIMED)
    attempts, checkpoint_attempt = claimed
    if attempts - checkpoint_attempt > settings.AMY_MAX_DELIVERIES:
        import_job_fail(import_job_id=import_job_id, error="max_deliveries", attempts=attempts)
        return ImportRunResult(ImportRunStatus.FAILED, attempts=attempts)

    job = ImportJob.objects.get(pk=import_job_id)
    logger.info("import %d: delivery %d starts at entry %d (byte %d)", job.pk, attempts, job.position, job.byte_offset)
    run = _Run(
        job=job,
        attempts=attempts,
        request_id=request_id or job.request_id or None,
        batch_size=batch_size,
        deadline=time.monotonic() + slice_seconds,
    )
    try:
        finished = run.go()
    except (ReaderError, _Unreadable) as exc:
        import_job_fail(import_job_id=import_job_id, error=str(exc), attempts=attempts)
        return ImportRunResult(ImportRunStatus.FAILED, attempts=attempts)
    except _Stale:
        logger.info("import %d changed under delivery %d; it stops", import_job_id, attempts)
        return ImportRunResult(ImportRunStatus.NOT_CLAIMED, attempts=attempts)
    except Exception as exc:  # noqa: BLE001 - the one boundary where any failure becomes a retry
        error = f"{type(exc).__name__}: {exc}"
        if retries >= settings.AMY_MAX_RETRIES:
            import_job_fail(import_job_id=import_job_id, error=f"retries_exhausted: {error}", attempts=attempts)
            return ImportRunResult(ImportRunStatus.FAILED, attempts=attempts)
        countdown = retry_countdown(retries)
        logger.warning("import %d failed, retry %d in %.1f s: %s", import_job_id, retries + 1, countdown, error)
        return ImportRunResult(ImportRunStatus.RETRY, attempts=attempts, retry_in=countdown)

    if not finished:
        logger.info("import %d: slice done at entry %d; a continuation follows", import_job_id, job.position)
        return ImportRunResult(ImportRunStatus.CONTINUED, attempts=attempts)
    if not _complete(import_job_id, attempts):
        return ImportRunResult(ImportRunStatus.NOT_CLAIMED, attempts=attempts)
    import_file_delete(import_job_id)
    logger.info("import %d completed: %d entries", import_job_id, job.position)
    return ImportRunResult(ImportRunStatus.COMPLETED, attempts=attempts)
