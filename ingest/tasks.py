"""Celery entry points: thin wrappers that take ids and call a service."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.conf import settings

from amy.request_context import current_request_id
from ingest.imports.services import (
    ImportRunStatus,
    import_files_delete_ended,
    import_job_process,
    import_jobs_requeue,
)
from ingest.labs.services import LabStorageUnavailable, lab_upload_submit, lab_uploads_resubmit_stale
from ingest.queues import (
    BACKFILL_TASK,
    DRAIN_TASK,
    IMPORT_RUN_TASK,
    LAB_SUBMIT_TASK,
    NORMALIZE_TASK,
    RECONCILE_TASK,
    USER_ERASE_TASK,
)
from ingest.services.backfill import connection_backfill
from ingest.services.drain import DrainResult, raw_events_drain
from ingest.services.erasure import erasure_publish, erasures_requeue, user_erase
from ingest.services.processing import raw_events_process_ready
from ingest.services.reconcile import RECONCILE_TIME_BUDGET_SECONDS, reconcile_recent
from ingest.terra_client import TerraRejected, TerraUnavailable
from ingest.terra_task import TerraTask

logger = logging.getLogger(__name__)


@shared_task(
    name=NORMALIZE_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
)
def normalize_raw_event(
    raw_event_id: int | None = None, request_id: str | None = None, retry_of: int | None = None
) -> dict[str, int]:
    """A delivery: the named row (if any) and the rows waiting with it, batch after batch; safe to
    run any number of times. Retries are messages of their own, sent by the service."""
    token = current_request_id.set(request_id)
    try:
        return raw_events_process_ready(raw_event_id=raw_event_id, retry_of=retry_of)
    finally:
        current_request_id.reset(token)


@shared_task(name=DRAIN_TASK, acks_late=True)
def drain_stuck_events() -> dict[str, int]:
    """The five-minute safety net: stuck ledger rows, and lab submissions, import runs and account
    erasures whose message was lost."""
    result: DrainResult = raw_events_drain(
        limit=settings.AMY_DRAIN_LIMIT, window_seconds=settings.AMY_DRAIN_WINDOW_SECONDS
    )
    return {
        "selected": result.selected,
        "published": result.published,
        "dead_lettered": result.dead_lettered,
        "lab_uploads_requeued": lab_uploads_resubmit_stale(),
        "import_jobs_requeued": len(import_jobs_requeue()),
        "import_files_deleted": import_files_delete_ended(),
        "erasures_requeued": sum(erasure_publish(user_id) for user_id in erasures_requeue()),
    }


@shared_task(
    bind=True,
    base=TerraTask,
    name=BACKFILL_TASK,
    autoretry_for=(TerraUnavailable,),
    retry_backoff=30,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=5,
)
def connection_backfill_task(self: Task, connection_id: int, days: int) -> None:
    try:
        connection_backfill(connection_id=connection_id, days=days)
    except TerraRejected as exc:
        logger.warning("Terra refused the backfill of connection %d: %s", connection_id, exc)


@shared_task(
    name=RECONCILE_TASK,
    # The run stops starting connections after its own budget; these limits only catch a hang.
    soft_time_limit=RECONCILE_TIME_BUDGET_SECONDS + 120,
    time_limit=RECONCILE_TIME_BUDGET_SECONDS + 180,
)
def reconcile_recent_task() -> dict[str, int | str]:
    """Nightly (Beat, 03:00 UTC, queue `amy`): ask Terra to re-send the last week of every connection."""
    return reconcile_recent().as_dict()


@shared_task(
    bind=True,
    base=TerraTask,
    name=LAB_SUBMIT_TASK,  # queue `amy`, the default
    acks_late=True,
    autoretry_for=(TerraUnavailable, LabStorageUnavailable),
    retry_backoff=30,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=5,
)
def lab_upload_submit_task(self: Task, lab_upload_id: int, request_id: str | None = None) -> str:
    """Send a stored lab upload to Terra; the last attempt marks it failed instead of raising."""
    token = current_request_id.set(request_id)
    try:
        final_attempt = self.request.called_directly or self.request.retries >= (self.max_retries or 0)
        return lab_upload_submit(lab_upload_id=lab_upload_id, final_attempt=final_attempt).value
    finally:
        current_request_id.reset(token)


@shared_task(
    bind=True,
    name=IMPORT_RUN_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # the service counts retries and deliveries against the settings
    # A run publishes one nudge per accepted entry: with trail on, Celery would keep a result
    # object for each in the request (about 2 KB per entry: +35 MB for a 50 MB file).
    trail=False,
)
def import_job_run(self: Task, import_job_id: int, request_id: str | None = None) -> str:
    """One delivery of an import job: batches from its checkpoint, safe to run again."""
    token = current_request_id.set(request_id)
    try:
        result = import_job_process(import_job_id=import_job_id, request_id=request_id, retries=self.request.retries)
    finally:
        current_request_id.reset(token)
    if result.status == ImportRunStatus.RETRY:
        raise self.retry(countdown=result.retry_in, kwargs={"import_job_id": import_job_id, "request_id": request_id})
    return result.status.value


@shared_task(
    bind=True,
    base=TerraTask,
    name=USER_ERASE_TASK,  # queue `amy`, the default
    acks_late=True,
    autoretry_for=(TerraUnavailable, LabStorageUnavailable),
    retry_backoff=30,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=5,
)
def user_erase_task(self: Task, user_id: str, request_id: str | None = None) -> str:
    """Carry out an account erasure (DELETE /v1/me); the last attempt erases the database rows
    even if Terra or the file store still fail, and records what it could not do."""
    token = current_request_id.set(request_id)
    try:
        final_attempt = self.request.called_directly or self.request.retries >= (self.max_retries or 0)
        return user_erase(user_id=user_id, final_attempt=final_attempt).value
    finally:
        current_request_id.reset(token)
