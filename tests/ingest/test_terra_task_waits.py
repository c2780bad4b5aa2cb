"""TerraTask's long waits (Terra's Retry-After, up to an hour) against the broker's visibility
timeout: a message held waiting longer than that timeout is handed out again by Redis, and both
copies run. Waits past `longest_countdown()` go in hops that each stay under it."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.signals import task_retry
from django.core.files.base import ContentFile

from accounts.models import User
from amy.celery import app as celery_app
from ingest.labs.services import uploads_storage
from ingest.models import LabUpload, LabUploadStatus
from ingest.tasks import lab_upload_submit_task
from ingest.terra_task import NOT_BEFORE_HEADER, longest_countdown
from tests.conftest import database_url_for_tests
from tests.fake_terra import FakeTerra
from tests.ingest import lab_files
from tests.live import CeleryWorker, RedisServer, running, service_env, wait_for

LAB_REPORTS = "/v2/lab-reports"
TERRA = {"TERRA_DEV_ID": "test-dev-id", "TERRA_API_KEY": "test-api-key", "TERRA_API_TIMEOUT_SECONDS": "2"}
# The private worker's timings: a countdown may last (6 - 3) / 1.2 = 2.5 s.
VISIBILITY_TIMEOUT, TASK_TIME_LIMIT = 6, 3
RETRY_AFTER = 9  # longer than the visibility timeout


@pytest.fixture
def terra(fake_terra: FakeTerra, settings: Any, tmp_path: Path) -> Iterator[FakeTerra]:
    fake_terra.reset()
    settings.TERRA_API_BASE_URL = fake_terra.url
    settings.TERRA_API_CONFIGURED = True
    settings.TERRA_DEV_ID, settings.TERRA_API_KEY = TERRA["TERRA_DEV_ID"], TERRA["TERRA_API_KEY"]
    settings.STORAGES = {
        **settings.STORAGES,
        "uploads": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}},
    }
    yield fake_terra
    fake_terra.reset()


@pytest.fixture
def lab_upload(terra: FakeTerra) -> LabUpload:
    """A stored PDF waiting to be sent to Terra, as POST /v1/labs leaves it."""
    content = lab_files.pdf()
    user = User.objects.create(id="user_terra_task_waits")
    lab_upload = LabUpload.objects.create(
        user=user,
        filename="bloods.pdf",
        content_type="application/pdf",
        size_bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        status=LabUploadStatus.PROCESSING,
    )
    name = uploads_storage().save(f"labs/{user.pk}/{lab_upload.pk}/report.pdf", ContentFile(content))
    LabUpload.objects.filter(pk=lab_upload.pk).update(storage_key=name)
    lab_upload.refresh_from_db()
    return lab_upload


@pytest.fixture
def retries() -> Iterator[list[Any]]:
    """Each retry Celery reports (its `Retry`: `when`, and the message `sig` it sent)."""
    seen: list[Any] = []

    def record(sender: Any = None, reason: Any = None, **kwargs: Any) -> None:
        seen.append(reason)

    task_retry.connect(record, weak=False)
    yield seen
    task_retry.disconnect(record)


@pytest.mark.django_db(transaction=True)
def test_a_retry_after_longer_than_a_safe_countdown_is_sent_as_a_hop_with_the_due_time(
    terra: FakeTerra, lab_upload: LabUpload, retries: list[Any]
) -> None:
    # given: Terra asks for an hour
    terra.path_script[LAB_REPORTS] = [429, 200]
    terra.status_headers[429] = {"Retry-After": "3600"}
    # when (eagerly: countdowns are not waited for)
    asked_at = time.time()
    assert lab_upload_submit_task.apply(kwargs={"lab_upload_id": lab_upload.pk}).get() == "submitted"
    # then: the message's countdown fits in the visibility timeout, and it carries the due time
    (retry,) = retries
    assert retry.when == pytest.approx(longest_countdown())
    assert retry.when < 3600
    assert retry.sig.options["headers"][NOT_BEFORE_HEADER] == pytest.approx(asked_at + 3600, abs=30)


def task_runs(log: str) -> list[str]:
    """How each run of the lab submission task ended, in order, from the worker's log: 'retry' or
    what the task returned."""
    outcomes = []
    for match in re.finditer(r"Task ingest\.lab_upload_submit\[[^\]]+\] (retry|succeeded in [0-9.e-]+s: '?(\w+))", log):
        outcomes.append(match.group(2) or "retry")
    return outcomes


def received(log: str) -> int:
    return len(re.findall(r"Task ingest\.lab_upload_submit\[[^\]]+\] received", log))


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_lab_report_waiting_past_the_visibility_timeout_is_submitted_once_and_run_once(
    terra: FakeTerra, lab_upload: LabUpload, tmp_path: Path
) -> None:
    # given: a worker whose broker hands a message out again after 6 s, and Terra asking for 9 s
    terra.path_script[LAB_REPORTS] = [429, 200]
    terra.status_headers[429] = {"Retry-After": str(RETRY_AFTER)}
    redis_server = RedisServer()
    env = service_env(
        database_url=database_url_for_tests(),
        redis_url="",
        TERRA_API_BASE_URL=terra.url,
        AMY_FILES_ROOT=str(tmp_path),
        AMY_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT),
        AMY_TASK_TIME_LIMIT=str(TASK_TIME_LIMIT),
        AMY_RETRY_MAX_SECONDS="1",
        **TERRA,
    )
    with running(redis_server):
        env["REDIS_URL"] = redis_server.url
        worker = CeleryWorker(env)
        with running(worker):
            # when: the submission is queued as POST /v1/labs queues it
            with celery_app.connection_for_write(redis_server.url) as connection:
                celery_app.send_task(
                    "ingest.lab_upload_submit",
                    kwargs={"lab_upload_id": lab_upload.pk},
                    queue="amy",
                    connection=connection,
                )
            wait_for(
                lambda: LabUpload.objects.filter(pk=lab_upload.pk, terra_upload_id__isnull=False).exists(),
                60,
                "the lab upload to be submitted",
                interval=0.2,
            )
            # ... and every message the worker received has finished
            wait_for(lambda: len(task_runs(worker.log())) >= received(worker.log()), 30, "the worker to settle")
            log = worker.log()
    # then: Terra saw the rate-limited attempt and one submission, and the task ran once for each
    assert [r.status for r in terra.requests_to(LAB_REPORTS, "POST")] == [429, 200]
    runs = task_runs(log)
    assert runs.count("submitted") == 1
    assert not {"busy", "already_submitted"} & set(runs), runs
    assert set(runs) == {"retry", "submitted"}
