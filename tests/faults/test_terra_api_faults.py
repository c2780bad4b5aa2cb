"""Terra's API (the fake, tests/fake_terra.py) slow, failing with 5xx and answering 429 with
Retry-After, during the nightly reconcile and during lab submission.

Reconcile runs as the real task on a private stack's worker while webhooks keep arriving: one
connection's trouble stays that connection's, the run ends bounded, and the webhook path does not
notice Terra's outage at all. Lab submission runs the real task with its retries (applied eagerly:
the policy is Celery's, the countdowns are not waited for) against scripted failures.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery.signals import task_retry
from django.core.files.base import ContentFile
from django.utils import timezone

from accounts.models import User
from amy.celery import app as celery_app
from ingest.labs.services import uploads_storage
from ingest.models import LabUpload, LabUploadStatus
from ingest.tasks import lab_upload_submit_task
from tests.fake_terra import FakeTerra
from tests.faults.conftest import MakeStack
from tests.faults.stack import FaultStack
from tests.ingest import lab_files
from tests.live import wait_for

pytestmark = pytest.mark.live

TERRA_ENV = {
    "TERRA_DEV_ID": "test-dev-id",
    "TERRA_API_KEY": "test-api-key",
    # Terra's push timeout is 8 s; our own calls to Terra give up after this long.
    "TERRA_API_TIMEOUT_SECONDS": "1",
}
BACKFILL_DAYS = 28
RECONCILE_DAYS = 7


def start_dates(terra: FakeTerra, days: int) -> list[Any]:
    """The data requests Terra received that ask for the last `days` days."""
    start = (timezone.now().date() - timedelta(days=days)).isoformat()
    return [r for r in terra.requests if r.query.get("start_date") == [start]]


def reconcile_results(stack: FaultStack) -> list[dict[str, Any]]:
    """Each reconcile run's summary, as the worker logged it."""
    results = []
    for line in stack.worker.log().splitlines():
        if '"reconcile_recent: ' in line:
            message = json.loads(line)["message"]
            results.append(ast.literal_eval(message.removeprefix("reconcile_recent: ")))
    return results


def run_reconcile(stack: FaultStack) -> dict[str, Any]:
    """The nightly task, queued on the stack's own Redis as Beat would queue it; its summary."""
    runs = len(reconcile_results(stack))
    with celery_app.connection_for_write(stack.redis.url) as connection:
        celery_app.send_task("ingest.reconcile_recent", queue="amy", connection=connection)
    wait_for(lambda: len(reconcile_results(stack)) > runs, 60, "the reconcile run to end", interval=0.2)
    stack.note("reconcile run ended")
    return reconcile_results(stack)[runs]


@pytest.fixture
def terra(fake_terra: FakeTerra) -> Iterator[FakeTerra]:
    fake_terra.reset()
    yield fake_terra
    fake_terra.reset()


def test_reconcile_isolates_slow_5xx_and_429_connections_and_ends_bounded_while_webhooks_flow(
    make_stack: MakeStack, terra: FakeTerra
) -> None:
    # given: seven connections (the stream's own, and six made by their auth webhooks)
    stack = make_stack(TERRA_API_BASE_URL=terra.url, **TERRA_ENV)
    users = ["t-ok", "t-slow", "t-5xx", "t-429", "t-gone", "t-ok-2"]
    with stack.stream() as stream:
        stack.connect_terra_user(stream)
        for user in users:
            stack.connect_terra_user(stream, user)
        # each new connection's own backfill has been asked for (and answered)
        wait_for(lambda: len(start_dates(terra, BACKFILL_DAYS)) == 4 * 7, 60, "the backfills", interval=0.2)
        stack.note("connections made")
        # when: Terra is slow for one user, fails with 5xx for one, rate-limits one, refuses one
        terra.user_delay["t-slow"] = 3.0
        terra.user_status.update({"t-5xx": 503, "t-429": 429, "t-gone": 404})
        terra.status_headers[429] = {"Retry-After": "120"}
        first = run_reconcile(stack)
        # and then rate-limits every user
        terra.user_delay.clear()
        terra.user_status.clear()
        terra.status = 429
        second = run_reconcile(stack)
        stream.wait_sent(10)

    # then: each failing connection cost one request and the run went on to the others
    assert first == {
        "connections": 7,
        "requested": 3,
        "failed": 3,
        "rate_limited": 1,
        "not_reached": 0,
        "stopped": "",
    }
    # and a limit on the whole account stops the run after three 429s in a row
    assert second == {
        "connections": 7,
        "requested": 0,
        "failed": 0,
        "rate_limited": 3,
        "not_reached": 4,
        "stopped": "rate_limited",
    }
    reconcile_requests = start_dates(terra, RECONCILE_DAYS)
    per_user = {user: sum(r.query["user_id"] == [user] for r in reconcile_requests[: 4 * 3 + 4]) for user in users}
    assert per_user == {"t-ok": 4, "t-slow": 1, "t-5xx": 1, "t-429": 1, "t-gone": 1, "t-ok-2": 4}
    assert len(reconcile_requests) == 4 * 3 + 4 + 3
    # and the webhooks never noticed: every body answered 200 and accounted for
    accounting = stack.settled_accounting(stream)
    assert accounting.first_outcomes == {"200": accounting.sent}


# Lab submission -----------------------------------------------------------------------------------

LAB_REPORTS = "/v2/lab-reports"


@pytest.fixture
def lab_terra(terra: FakeTerra, settings: Any, tmp_path: Path) -> FakeTerra:
    settings.TERRA_API_BASE_URL = terra.url
    settings.TERRA_API_CONFIGURED = True
    settings.TERRA_DEV_ID = TERRA_ENV["TERRA_DEV_ID"]
    settings.TERRA_API_KEY = TERRA_ENV["TERRA_API_KEY"]
    settings.TERRA_API_TIMEOUT_SECONDS = float(TERRA_ENV["TERRA_API_TIMEOUT_SECONDS"])
    settings.STORAGES = {
        **settings.STORAGES,
        "uploads": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}},
    }
    return terra


@pytest.fixture
def lab_upload(lab_terra: FakeTerra) -> LabUpload:
    """A stored PDF waiting to be sent to Terra, as POST /v1/labs leaves it."""
    content = lab_files.pdf()
    user = User.objects.create(id="user_lab_faults")
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
def retry_countdowns() -> Iterator[list[float]]:
    """The countdown of each retry the task schedules, as Celery reports it."""
    countdowns: list[float] = []

    def record(sender: Any = None, reason: Any = None, **kwargs: Any) -> None:
        countdowns.append(reason.when)

    task_retry.connect(record, weak=False)
    yield countdowns
    task_retry.disconnect(record)


def submit(lab_upload: LabUpload) -> str:
    """The submission task with its retries, as the worker would run it (countdowns skipped)."""
    return lab_upload_submit_task.apply(kwargs={"lab_upload_id": lab_upload.pk}).get()


@pytest.mark.django_db(transaction=True)
def test_lab_submission_retries_5xx_429_and_slow_answers_and_is_sent_once(
    lab_terra: FakeTerra, lab_upload: LabUpload, retry_countdowns: list[float]
) -> None:
    # given: Terra fails with 503, rate-limits, fails with 502, then answers slowly but in time
    lab_terra.path_script[LAB_REPORTS] = [503, 429, 502, (200, 0.5)]
    lab_terra.status_headers[429] = {"Retry-After": "5"}
    # when
    assert submit(lab_upload) == "submitted"
    # then: three retries, and the file reached Terra once
    posts = lab_terra.requests_to(LAB_REPORTS, "POST")
    assert [r.status for r in posts] == [503, 429, 502, 200]
    assert len(retry_countdowns) == 3
    lab_upload.refresh_from_db()
    assert (lab_upload.status, lab_upload.error) == (LabUploadStatus.PROCESSING, None)
    assert lab_upload.terra_upload_id is not None
    assert lab_upload.submitted_at is not None
    # and a second delivery of the task (a redelivered message, the drain's resubmission) sends nothing
    assert submit(lab_upload) == "already_submitted"
    assert len(lab_terra.requests_to(LAB_REPORTS, "POST")) == 4


@pytest.mark.django_db(transaction=True)
def test_lab_submission_failing_every_way_ends_failed_with_a_reason_after_bounded_retries(
    lab_terra: FakeTerra, lab_upload: LabUpload
) -> None:
    # given: Terra slow past our timeout, failing and rate-limiting, whatever is tried
    lab_terra.path_script[LAB_REPORTS] = [(200, 3.0), 503, 429, 500, 429, 502, 503, 503]
    lab_terra.status_headers[429] = {"Retry-After": "5"}
    # when
    assert submit(lab_upload) == "failed"
    # then: the first attempt and five retries, then failed with a reason a person can read
    assert len(lab_terra.requests_to(LAB_REPORTS, "POST")) == 6
    lab_upload.refresh_from_db()
    assert lab_upload.status == LabUploadStatus.FAILED
    assert lab_upload.error == (
        "Terra was unavailable; gave up after several attempts (Terra POST /lab-reports answered 502)."
    )
    # and it is never sent again
    assert submit(lab_upload) == "already_submitted"
    assert len(lab_terra.requests_to(LAB_REPORTS, "POST")) == 6


@pytest.mark.django_db(transaction=True)
def test_lab_submission_rate_limited_waits_at_least_what_retry_after_asks(
    lab_terra: FakeTerra, lab_upload: LabUpload, retry_countdowns: list[float]
) -> None:
    lab_terra.path_script[LAB_REPORTS] = [429, 200]
    lab_terra.status_headers[429] = {"Retry-After": "120"}
    assert submit(lab_upload) == "submitted"
    assert retry_countdowns[0] >= 120


@pytest.mark.django_db(transaction=True)
def test_lab_submission_that_timed_out_is_sent_again_rather_than_lost(
    lab_terra: FakeTerra, lab_upload: LabUpload
) -> None:
    # A decision, pinned: POST /lab-reports takes no idempotency key, so after a timeout we cannot
    # know whether Terra kept the file. Sending it again risks a second parse at Terra (its report
    # for the first upload id, unknown to us, stays parked); not sending risks never parsing it.
    # given: Terra takes the file but answers after our timeout, then answers in time
    lab_terra.path_script[LAB_REPORTS] = [(200, 3.0), 200]
    # when
    assert submit(lab_upload) == "submitted"
    # then: sent twice, and the upload holds the id of the answer we received
    assert [r.status for r in lab_terra.requests_to(LAB_REPORTS, "POST")] == [200, 200]
    lab_upload.refresh_from_db()
    assert lab_upload.terra_upload_id is not None
