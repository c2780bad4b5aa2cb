"""Carrying out an account erasure (DELETE /v1/me), asked for by accounts.erasure.

In order: deauthorize every connection at Terra, delete the stored lab and import files, then in
one transaction delete typed rows, lab uploads (biomarkers with them) and imports, redact the
ledger payloads of the user's Terra users, of the user's imports and lab reports, and of events
parked naming the user (the rows stay as tombstones without payload), delete the user's
Idempotency-Key answers, the trace rows naming the user, their Terra users or their ledger rows,
and the user. Terra and the file store come first because they can fail transiently: the task
retries them, and on its last attempt records what it could not do on the erasure and erases the
database rows regardless — the user's data in our database must go even when Terra is down. Safe
to run any number of times: a finished erasure is not run again.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from accounts.idempotency import idempotency_forget_user
from accounts.models import ErasedTerraUser, User, UserErasure
from amy.signals import user_erased
from ingest.classify import LAB_REPORT
from ingest.labs.services import LabStorageUnavailable
from ingest.models import (
    ConnectionStatus,
    ImportJob,
    LabUpload,
    RawEvent,
    RawEventSource,
    RawEventState,
    SyncDeletion,
    TerraConnection,
)
from ingest.publish import publish_task
from ingest.queues import DEFAULT_QUEUE, USER_ERASE_TASK
from ingest.services.erased_users import USER_ERASED
from ingest.services.terra_account import connection_data_erase
from ingest.terra_client import TerraClient, TerraRejected, TerraUnavailable
from ingest.uploads import STORAGE_ERRORS, is_missing, uploads_storage

logger = logging.getLogger(__name__)


class EraseStatus(enum.StrEnum):
    ERASED = "erased"
    ALREADY_DONE = "already_done"  # or never asked for: nothing to do


@dataclass
class _Problems:
    final_attempt: bool
    items: list[dict[str, str]] = field(default_factory=list)

    def add(self, step: str, target: str, exc: BaseException) -> None:
        self.items.append({"step": step, "target": target, "error": f"{type(exc).__name__}: {exc}"[:500]})


def user_erase(*, user_id: str, final_attempt: bool, client: TerraClient | None = None) -> EraseStatus:
    """Erase the account `user_id` asked to erase. Raises TerraUnavailable or LabStorageUnavailable
    for a retry unless `final_attempt`; then what failed is recorded on the erasure instead."""
    erasure = UserErasure.objects.filter(pk=user_id, completed_at=None).first()
    if erasure is None:
        return EraseStatus.ALREADY_DONE
    UserErasure.objects.filter(pk=user_id).update(attempts=F("attempts") + 1)
    problems = _Problems(final_attempt=final_attempt)
    _deauthorize_at_terra(user_id, problems, client)
    _delete_files(user_id, problems)
    with transaction.atomic():
        erasure = UserErasure.objects.select_for_update().filter(pk=user_id, completed_at=None).first()
        if erasure is None:  # another run finished meanwhile
            return EraseStatus.ALREADY_DONE
        rows = _erase_rows(user_id)
        # In the same transaction: an erasure marked done has deleted them, or is run again.
        traces = _traces_delete(user_id, rows)
        erasure.completed_at = timezone.now()
        erasure.errors = problems.items
        erasure.save(update_fields=["completed_at", "errors"])
    logger.info(
        "user erased: %d typed rows, %d ledger payloads, %d traces, %d problems left for operators",
        rows.typed_rows,
        rows.raw_events,
        traces,
        len(problems.items),
    )
    return EraseStatus.ERASED


def _deauthorize_at_terra(user_id: str, problems: _Problems, client: TerraClient | None) -> None:
    terra_user_ids = list(
        TerraConnection.objects.filter(user_id=user_id)
        .exclude(status=ConnectionStatus.DEAUTHORIZED)
        .values_list("terra_user_id", flat=True)
    )
    if not terra_user_ids:
        return
    if not settings.TERRA_API_CONFIGURED:
        for terra_user_id in terra_user_ids:
            problems.add("terra_deauthorize", terra_user_id, RuntimeError("Terra is not configured on this server"))
        return
    with client or TerraClient() as terra:
        for terra_user_id in terra_user_ids:
            try:
                terra.deauthenticate(terra_user_id)  # Terra's 404 (gone already) is success
            except TerraUnavailable as exc:
                if not problems.final_attempt:
                    raise
                problems.add("terra_deauthorize", terra_user_id, exc)
            except TerraRejected as exc:  # retrying will not change Terra's answer
                problems.add("terra_deauthorize", terra_user_id, exc)
            else:
                # So a retry after a later failure does not ask Terra again.
                TerraConnection.objects.filter(user_id=user_id, terra_user_id=terra_user_id).update(
                    status=ConnectionStatus.DEAUTHORIZED, disconnected_at=Now()
                )


def _delete_files(user_id: str, problems: _Problems) -> None:
    storage = uploads_storage()
    keys = [
        *LabUpload.objects.filter(user_id=user_id).exclude(storage_key="").values_list("storage_key", flat=True),
        *ImportJob.objects.filter(user_id=user_id).exclude(storage_key="").values_list("storage_key", flat=True),
    ]
    for key in keys:
        try:
            storage.delete(key)
        except STORAGE_ERRORS as exc:
            if is_missing(exc):
                continue
            if not problems.final_attempt:
                raise LabStorageUnavailable(type(exc).__name__) from exc
            problems.add("delete_file", key, exc)


@dataclass(frozen=True)
class _RowsErased:
    typed_rows: int
    raw_events: int
    # What names the user in rows outside the ones erased here: for the trace rows.
    terra_user_ids: list[str]
    raw_event_ids: list[int]


def _ledger_erase(rows: QuerySet[RawEvent]) -> int:
    """Redact these ledger rows; those still waiting for a worker or for a connection are
    `skipped:user_erased`, so no worker acts on them (nor dead-letters them as payload erased)."""
    # Payloads first: a set selected by its state would no longer match once the state moved.
    redacted = rows.exclude(payload=None).update(payload=None)
    rows.filter(state__in=[RawEventState.RECEIVED, RawEventState.PARKED]).update(
        state=RawEventState.SKIPPED, process_error=f"skipped:{USER_ERASED}", processed_at=Now(), lease_until=None
    )
    return redacted


def _erase_rows(user_id: str) -> _RowsErased:
    """Everything of the user in our database, in the caller's transaction."""
    user = User.objects.select_for_update().filter(pk=user_id).first()
    typed_rows = raw_events = 0
    terra_user_ids: list[str] = []
    for connection in TerraConnection.objects.filter(user_id=user_id):
        terra_user_ids.append(connection.terra_user_id)
        result = connection_data_erase(connection=connection)
        typed_rows += result.typed_rows
        raw_events += result.raw_events
    # The user's imports, by owner and by job (an entry's row keeps its job id whatever it names).
    import_ids = list(ImportJob.objects.filter(user_id=user_id).values_list("pk", flat=True))
    imported = RawEvent.objects.filter(Q(user_id=user_id) | Q(source=RawEventSource.IMPORT, import_id__in=import_ids))
    # Events parked for a Terra user we never connected, naming the user as Terra's reference id.
    parked = RawEvent.objects.filter(state=RawEventState.PARKED, reference_id=user_id).exclude(event_type=LAB_REPORT)
    # Lab reports of the user's uploads name no Terra user of theirs: by upload id.
    terra_upload_ids = [
        upload_id
        for upload_id in LabUpload.objects.filter(user_id=user_id).values_list("terra_upload_id", flat=True)
        if upload_id
    ]
    lab_reports = RawEvent.objects.filter(event_type=LAB_REPORT, reference_id__in=terra_upload_ids)
    raw_event_ids = [
        # As connection_data_erase selects them: not the rows another user imported.
        *RawEvent.objects.filter(
            Q(user_id__isnull=True) | Q(user_id=user_id), terra_user_id__in=terra_user_ids
        ).values_list("pk", flat=True),
        *(imported | parked | lab_reports).values_list("pk", flat=True),
    ]
    for rows in (imported, parked, lab_reports):
        raw_events += _ledger_erase(rows)
    # So a late event naming one of them alone is known as this account's (and stays erased).
    ErasedTerraUser.objects.bulk_create(
        [ErasedTerraUser(terra_user_id=t, user_id=user_id, erased_at=timezone.now()) for t in terra_user_ids],
        update_conflicts=True,
        unique_fields=["terra_user_id"],
        update_fields=["user_id", "erased_at"],
    )
    idempotency_forget_user(user_id)
    if user is not None:
        # Cascades: connections, typed rows, lab uploads and biomarkers, imports, tokens, logins.
        user.delete()
    # The delete triggers wrote tombstones for a mirror that no longer has an owner.
    SyncDeletion.objects.filter(user_id=user_id).delete()
    return _RowsErased(
        typed_rows=typed_rows, raw_events=raw_events, terra_user_ids=terra_user_ids, raw_event_ids=raw_event_ids
    )


def _traces_delete(user_id: str, rows: _RowsErased) -> int:
    """Trace rows naming the user, their Terra users or their ledger rows: the ops app keeps them
    and deletes them on `user_erased` (admin_ops/trace_erasure.py)."""
    # What each receiver answered (the stubs type it as text; ours answer a count).
    answers: Sequence[tuple[object, object]] = user_erased.send(
        sender=None, user_id=user_id, terra_user_ids=list(rows.terra_user_ids), raw_event_ids=rows.raw_event_ids
    )
    return sum(deleted for _, deleted in answers if isinstance(deleted, int))


def erasure_publish(user_id: str, request_id: str | None = None) -> bool:
    """Queue the erasure; a broker failure is logged (the drain queues it again later)."""
    return publish_task(USER_ERASE_TASK, {"user_id": user_id, "request_id": request_id}, queue=DEFAULT_QUEUE)


def erasures_requeue(*, older_than: timedelta = timedelta(minutes=30), limit: int = 100) -> list[str]:
    """Unfinished erasures asked for more than `older_than` ago (a lost publish, or a worker lost
    mid-way): the ids to queue again."""
    return list(
        UserErasure.objects.filter(completed_at=None, requested_at__lt=timezone.now() - older_than)
        .order_by("requested_at")
        .values_list("user_id", flat=True)[:limit]
    )
