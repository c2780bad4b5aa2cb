"""Imports on a private stack: a worker killed mid-import resumes from its checkpoint with
exact counters, and a poison file that kills its worker every time ends `failed` after a bounded
number of deliveries, with its copy on terra-events-dlq.

Each test starts its own redis-server and Celery worker (on the test database, with the uploads
storage on a temporary directory) so it can kill them; the machine's shared servers are left alone.

This module is also loaded by the poison test's worker (`--include`): with AMY_TEST_IMPORT_POISON=1
in its environment, an entry carrying POISON_KEY kills the worker process that reads it.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POISON_ENV = "AMY_TEST_IMPORT_POISON"
POISON_KEY = "amy_test_poison"


def _install_poison() -> None:
    """In the worker only: reading an entry with POISON_KEY SIGKILLs the process reading it."""
    from ingest.imports import services

    classify_entry = services.entry_classify

    def classify_or_die(value: Any) -> Any:
        if isinstance(value, dict) and value.get(POISON_KEY):
            os.kill(os.getpid(), signal.SIGKILL)
        return classify_entry(value)

    services.entry_classify = classify_or_die


if os.environ.get(POISON_ENV) == "1":
    _install_poison()


import json  # noqa: E402 - the hook above must not depend on the test-only imports below
from datetime import date, timedelta  # noqa: E402

import psycopg  # noqa: E402
import pytest  # noqa: E402
import redis  # noqa: E402

from accounts.models import User  # noqa: E402
from amy.celery import app as celery_app  # noqa: E402
from ingest.classify import classify  # noqa: E402
from ingest.imports import services  # noqa: E402
from ingest.models import ImportJob, ImportJobStatus, RawEvent  # noqa: E402
from ingest.services.webhook import _INSERT_SQL, dedup_key_for  # noqa: E402
from tests.conftest import database_url_for_tests  # noqa: E402
from tests.ingest.test_imports import daily_body, generate  # noqa: E402
from tests.live import CeleryWorker, RedisServer, service_env, wait_for  # noqa: E402
from tests.queues import queued_messages  # noqa: E402

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

FINISHED = (ImportJobStatus.COMPLETED, ImportJobStatus.FAILED)


@dataclass
class ImportStack:
    redis: RedisServer
    worker: CeleryWorker
    files: Path

    def publish(self, import_job_id: int) -> None:
        """Queue a run on the private Redis (never on the test settings' shared one)."""
        with celery_app.connection_for_write(self.redis.url) as connection:
            celery_app.send_task(
                services.IMPORT_TASK,
                kwargs={"import_job_id": import_job_id, "request_id": None},
                queue=services.IMPORT_QUEUE,
                connection=connection,
            )


def start_stack(files: Path, **overrides: str) -> ImportStack:
    redis_server = RedisServer()
    redis_server.start()
    env = service_env(
        database_url=database_url_for_tests(), redis_url=redis_server.url, AMY_FILES_ROOT=str(files), **overrides
    )
    worker = CeleryWorker(env)
    if overrides.get(POISON_ENV) == "1":
        at = worker.command.index("tests.fault_hooks")
        worker.command[at] = "tests.fault_hooks,tests.faults.test_import_faults"
    try:
        worker.start()
    except BaseException:
        worker.kill()
        redis_server.kill()
        raise
    return ImportStack(redis_server, worker, files)


@pytest.fixture
def files(tmp_path: Path, settings: Any) -> Path:
    """The uploads storage of this process and of the stack's worker: one temporary directory."""
    directory = tmp_path / "files"
    directory.mkdir()
    settings.STORAGES = {
        **settings.STORAGES,
        "uploads": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(directory)}},
    }
    return directory


@pytest.fixture
def stack(django_db_setup: None, files: Path) -> Iterator[ImportStack]:
    started = start_stack(files)
    yield started
    started.worker.kill()
    started.redis.kill()


@pytest.fixture
def poison_stack(django_db_setup: None, files: Path) -> Iterator[ImportStack]:
    started = start_stack(files, **{POISON_ENV: "1", "AMY_MAX_DELIVERIES": "3"})
    yield started
    started.worker.kill()
    started.redis.kill()


def create_job(user: User, content: bytes, monkeypatch: pytest.MonkeyPatch) -> ImportJob:
    """The stored file and its pending job, with the publish left to the test."""
    monkeypatch.setattr(services, "publish_import_job", lambda *args, **kwargs: True)
    spool = services.ImportSpool(max_bytes=10**9)
    try:
        spool.write(content)
        return services.import_job_create(user=user, spool=spool, request_id="req_import_fault")
    finally:
        spool.close()
        monkeypatch.undo()


def wait_finished(import_job_id: int, timeout: float) -> ImportJob:
    wait_for(
        lambda: ImportJob.objects.get(pk=import_job_id).status in FINISHED, timeout, f"import {import_job_id} to end"
    )
    return ImportJob.objects.get(pk=import_job_id)


def hold_ledger_key(entry: bytes) -> psycopg.Connection[Any]:
    """An open transaction that has inserted `entry`'s ledger key: the import's insert of that
    entry waits for it (then, after lock_timeout, fails and is retried), so the import stops there."""
    body = json.loads(entry)
    classification = classify(body)
    conn = psycopg.connect(database_url_for_tests().replace("postgres://", "postgresql://"))
    conn.execute(
        _INSERT_SQL,
        [
            classification.event_type,
            classification.terra_user_id,
            classification.reference_id,
            classification.provider,
            entry.decode(),
            False,
            dedup_key_for(entry),
            "req_blocker",
            None,
            None,
            None,
            "webhook",
            None,
            None,
            None,
            "received",
        ],
    )
    return conn


def test_a_worker_killed_mid_import_resumes_from_its_checkpoint_with_exact_counters(
    stack: ImportStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: an import of 10,000 payloads, whose entry 5,050 is held by another open transaction
    run = uuid.uuid4().hex[:12]
    generated = generate(10_000, run)
    blocked_at = 5_050
    assert generated.entries[blocked_at].startswith(b'{"type":"daily"')
    blocker = hold_ledger_key(generated.entries[blocked_at])
    try:
        user = User.objects.create(id=f"user_import_live_{run}")
        job = create_job(user, generated.as_array(), monkeypatch)
        stack.publish(job.pk)
        # when: the import has committed the batches before that entry and waits inside the next
        checkpoint = blocked_at - blocked_at % services.batch_size_setting()
        wait_for(lambda: ImportJob.objects.get(pk=job.pk).position == checkpoint, 60, "the checkpoint before 5,050")
        wait_for(
            lambda: RawEvent.objects.filter(import_id=job.pk).count() == ImportJob.objects.get(pk=job.pk).accepted,
            5,
            "the ledger to match the committed counters",
        )
        # the whole worker is SIGKILLed in the middle of that batch
        stack.worker.kill()
    finally:
        blocker.rollback()
        blocker.close()
    killed = ImportJob.objects.get(pk=job.pk)
    assert killed.status == ImportJobStatus.PROCESSING
    assert (killed.position, killed.total) == (checkpoint, checkpoint)
    offset = len(stack.worker.log())
    # and started again
    stack.worker.start()

    # then: the job is redelivered, resumes at its checkpoint, and its counters are exact
    finished = wait_finished(job.pk, timeout=120)
    assert finished.status == ImportJobStatus.COMPLETED, finished.error
    assert (finished.total, finished.accepted, finished.duplicates, finished.rejected) == (
        10_000,
        generated.accepted,
        generated.duplicates,
        generated.rejected,
    )
    assert [e["index"] for e in finished.errors] == [e["index"] for e in generated.errors]
    assert finished.attempts >= 2
    assert f"starts at entry {checkpoint} " in stack.worker.log()[offset:]
    assert "starts at entry 0 " not in stack.worker.log()[offset:]
    assert RawEvent.objects.filter(import_id=job.pk).count() == generated.accepted
    assert not RawEvent.objects.filter(request_id="req_blocker").exists()


def test_a_poison_import_that_kills_its_worker_fails_after_bounded_deliveries_with_a_dlq_copy(
    poison_stack: ImportStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: an import whose 150th entry kills the worker process that reads it, every time
    run = uuid.uuid4().hex[:12]
    entries = [json.dumps(daily_body(f"terra-{run}", date(2021, 1, 1) + timedelta(days=i), i)) for i in range(300)]
    entries[150] = json.dumps({"type": "daily", POISON_KEY: True, "data": []})
    user = User.objects.create(id=f"user_import_poison_{run}")
    job = create_job(user, ("\n".join(entries) + "\n").encode(), monkeypatch)
    # when: it is queued
    poison_stack.publish(job.pk)
    # then: after AMY_MAX_DELIVERIES (3) deaths, the next delivery fails it, never retried forever
    finished = wait_finished(job.pk, timeout=120)
    assert finished.status == ImportJobStatus.FAILED
    assert finished.error == "max_deliveries"
    assert finished.attempts == 4
    assert (finished.total, finished.accepted) == (0, 0)
    assert not RawEvent.objects.filter(import_id=job.pk).exists()
    # and its copy is on terra-events-dlq
    client = redis.Redis.from_url(poison_stack.redis.url)
    wait_for(lambda: queued_messages(client, "terra-events-dlq"), 10, "the DLQ copy")
    [copy] = queued_messages(client, "terra-events-dlq")
    assert copy["import_job_id"] == job.pk
    assert copy["error"] == "max_deliveries"
    assert copy["user_id"] == user.pk
    # and the worker itself lives on
    assert poison_stack.worker.is_running()
    assert poison_stack.worker.log().count("WorkerLostError") >= 3
