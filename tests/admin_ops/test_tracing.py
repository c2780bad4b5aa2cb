"""Tracing: a webhook's journey in trace_events, a tracer that never fails its caller,
no secrets in traces, /admin/traces and the retention job."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from admin_ops.models import TraceEvent
from admin_ops.tasks import prune_traces, traces_prune
from admin_ops.trace_handler import TraceDatabaseHandler, trace_handler
from amy import tracing
from amy.request_context import current_request_id
from ingest.services.processing import raw_event_process
from tests.conftest import PostWebhook
from tests.terra import body_of, sample, signed_headers

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[TraceDatabaseHandler]:
    """The installed handler, its background writer put to sleep so the test flushes on its own
    thread (and its own transaction)."""
    installed = trace_handler()
    assert installed is not None, "LOGGING installs the trace handler on amy.trace"
    monkeypatch.setattr(installed, "flush_interval", 3600)
    monkeypatch.setattr(installed, "batch_size", 100_000)
    installed.flush()
    installed._wake.set()
    time.sleep(0.05)
    yield installed
    installed._buffer.clear()


def _post(client: Client, body: bytes, **headers: str):  # type: ignore[no-untyped-def]
    return client.generic("POST", "/webhooks/terra", body, content_type="application/json", headers=headers)


def test_a_webhooks_request_id_finds_its_journey_from_receipt_through_normalization(
    post_webhook: PostWebhook, handler: TraceDatabaseHandler
) -> None:
    response = post_webhook(sample("auth_success"))
    assert response.status_code == 200
    request_id, raw_event_id = response.json()["request_id"], response.json()["raw_event_id"]

    token = current_request_id.set(request_id)  # as the Celery task does
    try:
        raw_event_process(raw_event_id=raw_event_id, request_id=request_id)
    finally:
        current_request_id.reset(token)
    handler.flush()

    rows = {row.event: row for row in TraceEvent.objects.filter(request_id=request_id)}
    assert {"webhook_start", "webhook_complete", "normalize_start", "normalize_complete"} <= set(rows)
    assert rows["webhook_complete"].raw_event_id == raw_event_id
    assert rows["webhook_complete"].data == {"type": "auth", "duplicate": False}
    assert rows["webhook_complete"].duration_ms is not None
    assert rows["normalize_start"].raw_event_id == raw_event_id
    assert rows["normalize_complete"].raw_event_id == raw_event_id
    assert rows["normalize_complete"].data == {"attempts": 1, "outcome": "processed"}
    assert all(row.level == "info" for row in rows.values())


def test_a_rejected_webhook_is_traced_as_a_warning_with_its_reason(
    client: Client, handler: TraceDatabaseHandler
) -> None:
    response = _post(client, b'{"type": "auth"}', **{"terra-signature": "t=1,v1=00"})
    assert response.status_code == 401
    handler.flush()
    row = TraceEvent.objects.get(request_id=response.json()["request_id"], event="webhook_rejected")
    assert row.level == "warn"
    assert row.data["status"] == 401
    assert row.data["reason"] == response.json()["reason"]


def test_a_failing_trace_write_does_not_fail_the_request_and_says_so_on_stderr(
    post_webhook: PostWebhook,
    handler: TraceDatabaseHandler,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    def broken_write(batch: object) -> None:
        raise RuntimeError("trace database is down")

    monkeypatch.setattr(handler, "_write", broken_write)
    response = post_webhook(sample("auth_success"))
    assert response.status_code == 200
    assert response.json()["ok"] is True
    handler.flush()  # never raises either

    err = capfd.readouterr().err
    assert "amy.trace: trace write failed" in err
    assert "trace database is down" in err
    assert not TraceEvent.objects.filter(request_id=response.json()["request_id"]).exists()


def test_a_copy_the_database_refuses_is_reported_and_leaves_the_callers_transaction_usable(
    post_webhook: PostWebhook,
    handler: TraceDatabaseHandler,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    lines = io.StringIO()
    monkeypatch.setattr(handler, "stream", lines)
    with connection.cursor() as cursor:  # rolled back with the test
        cursor.execute("ALTER TABLE trace_events RENAME TO trace_events_away")
    response = post_webhook(sample("auth_success"))
    assert response.status_code == 200
    handler.flush()

    assert "amy.trace: trace write failed" in capfd.readouterr().err
    # The stdout copy went out before the rows were tried.
    assert response.json()["request_id"] in lines.getvalue()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM raw_events WHERE request_id = %s", [response.json()["request_id"]])
        assert cursor.fetchone() == (1,)


def test_the_webhook_answers_before_its_traces_are_written(
    post_webhook: PostWebhook, handler: TraceDatabaseHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = io.StringIO()
    monkeypatch.setattr(handler, "stream", lines)
    response = post_webhook(sample("auth_success"))
    assert response.status_code == 200
    request_id = response.json()["request_id"]
    # Buffered only: no row and no stdout line until the writer (here: the test) flushes.
    assert not TraceEvent.objects.filter(request_id=request_id).exists()
    assert lines.getvalue() == ""
    handler.flush()
    assert set(TraceEvent.objects.filter(request_id=request_id).values_list("event", flat=True)) == {
        "webhook_start",
        "webhook_complete",
    }


def test_each_trace_is_one_json_line_on_stdout_with_its_ids(
    post_webhook: PostWebhook, handler: TraceDatabaseHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = io.StringIO()
    monkeypatch.setattr(handler, "stream", lines)
    response = post_webhook(sample("auth_success"))
    tracing.start("normalize", request_id=response.json()["request_id"], raw_event_id=7).fail(ValueError("boom"))
    handler.flush()

    request_id, raw_event_id = response.json()["request_id"], response.json()["raw_event_id"]
    out = [json.loads(line) for line in lines.getvalue().splitlines()]
    mine = {line["trace"]["event"]: line for line in out if line["request_id"] == request_id}
    assert set(mine) == {"webhook_start", "webhook_complete", "normalize_start", "normalize_failed"}
    done = mine["webhook_complete"]
    assert (done["level"], done["logger"], done["message"]) == ("INFO", "amy.trace", "webhook_complete")
    assert done["trace"]["raw_event_id"] == raw_event_id
    assert done["trace"]["data"] == {"type": "auth", "duplicate": False}
    assert done["trace"]["duration_ms"] >= 0
    assert done["ts"].endswith("+00:00")
    failed = mine["normalize_failed"]
    assert (failed["level"], failed["trace"]["error_name"]) == ("ERROR", "ValueError")
    assert "ValueError: boom" in failed["trace"]["error_stack"]
    # Each line's row says the same.
    row = TraceEvent.objects.get(request_id=request_id, event="normalize_failed")
    assert (row.level, row.raw_event_id, row.error_name) == ("error", 7, "ValueError")


def test_a_record_logged_on_the_trace_logger_takes_the_same_path(
    handler: TraceDatabaseHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = io.StringIO()
    monkeypatch.setattr(handler, "stream", lines)
    trace = {"event": "logged_directly", "request_id": "req_logged", "raw_event_id": 3, "data": {"n": 1}}
    logging.getLogger("amy.trace").warning("by hand", extra={"trace": trace})
    handler.flush()
    row = TraceEvent.objects.get(request_id="req_logged")
    assert (row.event, row.level, row.message, row.raw_event_id, row.data) == (
        "logged_directly",
        "warn",
        "by hand",
        3,
        {"n": 1},
    )
    assert json.loads(lines.getvalue())["trace"]["event"] == "logged_directly"


def test_values_the_database_would_refuse_are_made_storable_rather_than_losing_the_batch(
    handler: TraceDatabaseHandler, capfd: pytest.CaptureFixture[str]
) -> None:
    tracing.info("odd_values", "nul\x00inside", request_id="req_odd", raw_event_id=2**70, note="a\x00b")
    tracing.info("next_one", request_id="req_odd")
    handler.flush()
    assert "trace write failed" not in capfd.readouterr().err
    rows = {row.event: row for row in TraceEvent.objects.filter(request_id="req_odd")}
    assert set(rows) == {"odd_values", "next_one"}
    assert rows["odd_values"].raw_event_id is None
    assert "\x00" not in rows["odd_values"].message
    assert "\x00" not in json.dumps(rows["odd_values"].data)


def test_the_tracer_itself_never_raises(handler: TraceDatabaseHandler, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("tracing is broken")

    # Through the trace handler, and through plain logging when no such handler is installed.
    monkeypatch.setattr(handler, "submit", broken)
    monkeypatch.setattr(tracing._logger, "log", broken)
    for sink in (tracing._sink, lambda: None):
        monkeypatch.setattr(tracing, "_sink", sink)
        span = tracing.start("anything", raw_event_id=1)
        span.end(outcome="ok")
        tracing.start("other").fail(ValueError("boom"))
        tracing.warn("a_warning", reason="x")


@pytest.mark.django_db(transaction=True)
def test_the_background_writer_stores_traces_on_its_own(post_webhook: PostWebhook) -> None:
    installed = trace_handler()
    assert installed is not None
    # Out of the hour-long wait an earlier test's `handler` fixture may have left it in.
    installed._wake.set()
    response = post_webhook(sample("auth_success"))
    # The webhook's own rows: a live worker may trace its normalization under the same request id.
    rows = TraceEvent.objects.filter(request_id=response.json()["request_id"], event__startswith="webhook_")
    deadline = time.monotonic() + 10
    while rows.count() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(rows.values_list("event", flat=True)) == {"webhook_start", "webhook_complete"}


def test_trace_rows_hold_no_secret_signature_or_payload(client: Client, handler: TraceDatabaseHandler) -> None:
    marker = "very-private-heart-rate-marker-4242"
    body = body_of({"type": "activity", "user": {"user_id": "u-secret-test"}, "data": [{"note": marker}]})
    headers = signed_headers(body)
    response = _post(client, body, **headers)
    assert response.status_code == 200
    bad = _post(client, body_of({"type": "auth", "note": marker}), **{"terra-signature": headers["terra-signature"]})
    assert bad.status_code == 401
    # A caller that passes secrets or bodies by mistake: the tracer drops those keys.
    tracing.info("careless", request_id=response.json()["request_id"], payload=marker, webhook_secret="s", body="b")
    handler.flush()

    rows = TraceEvent.objects.filter(request_id__in=[response.json()["request_id"], bad.json()["request_id"]])
    assert rows.count() >= 4
    dumped = json.dumps(list(rows.values()), default=str)
    for secret in (marker, settings.TERRA_WEBHOOK_SECRETS[0], headers["terra-signature"], body.decode()):
        assert secret not in dumped
    careless = rows.get(event="careless")
    assert careless.data == {}


def test_tracing_off_writes_nothing(
    post_webhook: PostWebhook, handler: TraceDatabaseHandler, settings: pytest.FixtureRequest
) -> None:
    settings.AMY_TRACING = False  # type: ignore[attr-defined]
    response = post_webhook(sample("auth_success"))
    assert response.status_code == 200
    handler.flush()
    assert not TraceEvent.objects.filter(request_id=response.json()["request_id"]).exists()


# /admin/traces ------------------------------------------------------------------------------------


def _trace(**fields: object) -> TraceEvent:
    values: dict[str, object] = {"ts": timezone.now(), "level": "info", "event": "test_event", "message": ""}
    values.update(fields)
    return TraceEvent.objects.create(**values)


def _get(client: Client, **params: str):  # type: ignore[no-untyped-def]
    return client.get("/admin/traces", params, headers={"x-admin-key": settings.AMY_ADMIN_KEY})


def test_traces_need_the_admin_key(client: Client) -> None:
    assert client.get("/admin/traces").status_code == 401
    wrong = client.get("/admin/traces", headers={"x-admin-key": "not-the-key"})
    assert wrong.status_code == 401


def test_traces_filter_by_request_id_level_user_and_raw_event_newest_first(client: Client) -> None:
    now = timezone.now()
    a1 = _trace(request_id="req_a", ts=now - timedelta(minutes=3), event="webhook_start")
    a2 = _trace(request_id="req_a", ts=now - timedelta(minutes=2), event="webhook_complete", raw_event_id=77)
    a3 = _trace(
        request_id="req_a", ts=now - timedelta(minutes=1), level="error", event="normalize_failed", user_id="u1"
    )
    _trace(request_id="req_b", ts=now, raw_event_id=78, user_id="u2")
    _trace(request_id="req_a", ts=now - timedelta(hours=25), event="too_old")

    body = _get(client, request_id="req_a").json()
    assert [row["id"] for row in body["data"]] == [a3.pk, a2.pk, a1.pk]
    assert body["next_cursor"] is None
    assert set(body["data"][0]) == {
        "id", "ts", "request_id", "user_id", "terra_user_id", "raw_event_id", "level", "event",
        "message", "data", "duration_ms", "error_name", "error_stack",
    }  # fmt: skip
    assert [row["id"] for row in _get(client, request_id="req_a", level="error").json()["data"]] == [a3.pk]
    assert [row["id"] for row in _get(client, request_id="req_a", raw_event_id="77").json()["data"]] == [a2.pk]
    assert [row["id"] for row in _get(client, request_id="req_a", user_id="u1").json()["data"]] == [a3.pk]
    since = (now - timedelta(hours=26)).isoformat()
    assert len(_get(client, request_id="req_a", since=since).json()["data"]) == 4
    assert _get(client, level="loud").status_code == 400
    assert _get(client, raw_event_id="x").status_code == 400
    assert _get(client, since="yesterday").status_code == 400


def test_traces_paginate_with_a_cursor(client: Client) -> None:
    now = timezone.now()
    ids = [_trace(request_id="req_page", ts=now - timedelta(seconds=i)).pk for i in range(5)]
    seen: list[int] = []
    cursor = None
    for _ in range(5):
        params = {"request_id": "req_page", "limit": "2", **({"cursor": cursor} if cursor else {})}
        body = _get(client, **params).json()
        seen += [row["id"] for row in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    assert _get(client, cursor="not a cursor").status_code == 400
    assert _get(client, limit="501").status_code == 400


# retention ----------------------------------------------------------------------------------------


def test_prune_removes_old_rows_only(settings: pytest.FixtureRequest) -> None:
    now = timezone.now()
    old = _trace(request_id="req_prune", ts=now - timedelta(days=15))
    kept = _trace(request_id="req_prune", ts=now - timedelta(days=13))
    assert prune_traces() >= 1
    assert set(TraceEvent.objects.filter(request_id="req_prune").values_list("id", flat=True)) == {kept.pk}
    assert not TraceEvent.objects.filter(pk=old.pk).exists()

    settings.AMY_TRACE_RETENTION_DAYS = 10  # type: ignore[attr-defined]
    traces_prune()
    assert not TraceEvent.objects.filter(request_id="req_prune").exists()


def test_the_prune_schedule_is_installed_daily_on_the_amy_queue() -> None:
    from tests.beat import installed_beat_task

    task = installed_beat_task("prune_traces")
    assert (task.task, task.queue, task.enabled) == ("admin_ops.prune_traces", "amy", True)
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_month) == ("30", "3", "*")
