"""The console: the Django admin at /console/ — raw events without COUNT(*), the pretty
payload, the replay action through the replay service, traces and the read-only admins."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from admin_ops.models import AuditRecord, TraceEvent
from ingest.models import ImportJob, LabUpload, RawEvent, RawEventState, TerraConnection
from tests.admin_ops.helpers import dead
from tests.ledger import store
from tests.terra import body_of

pytestmark = pytest.mark.django_db

STAFF = "ops-carol"
CHANGELIST = "/console/ingest/rawevent/"


@pytest.fixture
def staff() -> AbstractBaseUser:
    return get_user_model().objects.create_superuser(STAFF, "carol@example.com", "not-used")


@pytest.fixture
def console(client: Client, staff: AbstractBaseUser) -> Client:
    client.force_login(staff)
    return client


def _counts_on(queries: CaptureQueriesContext, table: str) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper() and f'"{table}"' in q["sql"]]


def test_an_anonymous_visitor_is_sent_to_the_login_page(client: Client) -> None:
    response = client.get(CHANGELIST)

    assert response.status_code == 302
    assert response["Location"].startswith("/console/login/")


def test_the_raw_events_list_renders_its_rows_without_counting_the_table(console: Client) -> None:
    first = dead("daily", n=1)
    second = dead("sleep", n=2, error="retries_exhausted: " + "x" * 200)

    with CaptureQueriesContext(connection) as queries:
        response = console.get(CHANGELIST)

    assert response.status_code == 200
    assert _counts_on(queries, "raw_events") == []
    body = response.content.decode()
    assert f">{first.pk}<" in body
    assert f">{second.pk}<" in body
    assert "retries_exhausted: boom" in body
    assert "x" * 100 not in body  # the error is shortened in the list
    assert all('"payload"' not in q["sql"] for q in queries.captured_queries if '"raw_events"' in q["sql"])


@pytest.mark.parametrize(
    "query",
    [
        "state=dead",
        "event_type=daily",
        "provider=GARMIN",
        "source=webhook",
        "received_at__gte=2020-01-01+00:00:00%2B00:00",
        "q=tu-1",
        "q=req_test",
        "q=-1",
    ],
)
def test_the_raw_events_filters_and_search_never_count(console: Client, query: str) -> None:
    dead("daily", n=1)

    with CaptureQueriesContext(connection) as queries:
        response = console.get(f"{CHANGELIST}?{query}")

    assert response.status_code == 200
    assert _counts_on(queries, "raw_events") == []


def test_search_is_exact_on_the_id_the_terra_user_and_the_request_id(console: Client) -> None:
    one = dead("daily", n=1)
    two = dead("daily", n=2, request_id="req_other")

    by_id = console.get(f"{CHANGELIST}?q={one.pk}").context["cl"].result_list
    by_user = console.get(f"{CHANGELIST}?q=tu-2").context["cl"].result_list
    by_request = console.get(f"{CHANGELIST}?q=req_other").context["cl"].result_list
    by_prefix = console.get(f"{CHANGELIST}?q=tu-").context["cl"].result_list

    assert [row.pk for row in by_id] == [one.pk]
    assert [row.pk for row in by_user] == [two.pk]
    assert [row.pk for row in by_request] == [two.pk]
    assert list(by_prefix) == []


def test_the_dead_letter_filter_lists_only_dead_rows(console: Client) -> None:
    dead_row = dead("daily", n=1)
    store(body_of({"type": "daily", "user": {"user_id": "tu-9"}, "data": []}))

    rows = console.get(f"{CHANGELIST}?state=dead").context["cl"].result_list

    assert [row.pk for row in rows] == [dead_row.pk]


def test_the_change_view_shows_the_payload_pretty_printed_and_read_only(console: Client) -> None:
    raw_event = dead("daily", n=1)

    response = console.get(f"{CHANGELIST}{raw_event.pk}/change/")

    assert response.status_code == 200
    body = response.content.decode()
    pretty = json.dumps(json.loads(raw_event.payload), indent=2, ensure_ascii=False)
    assert "\n  &quot;type&quot;: &quot;daily&quot;" in body
    assert pretty.replace('"', "&quot;") in body
    assert not re.search(r'<input[^>]+name="(state|event_type|payload)"', body)
    assert 'name="_save"' not in body


def test_the_change_view_shows_a_payload_that_is_not_json_verbatim(console: Client) -> None:
    raw_event = dead("daily", n=1)
    RawEvent.objects.filter(pk=raw_event.pk).update(payload="not json <at all>")

    response = console.get(f"{CHANGELIST}{raw_event.pk}/change/")

    assert response.status_code == 200
    assert "not json &lt;at all&gt;" in response.content.decode()


def test_the_replay_action_asks_for_confirmation_first(console: Client) -> None:
    rows = [dead("daily", n=1), dead("daily", n=2)]

    response = console.post(CHANGELIST, {"action": "replay", "_selected_action": [row.pk for row in rows]})

    assert response.status_code == 200
    assert "Yes, replay" in response.content.decode()
    assert set(RawEvent.objects.values_list("state", flat=True)) == {RawEventState.DEAD}


def test_the_replay_action_puts_dead_rows_back_with_the_staff_username(
    console: Client, django_capture_on_commit_callbacks
) -> None:
    rows = [dead("daily", n=1), dead("daily", n=2)]

    with django_capture_on_commit_callbacks() as after_commit:
        response = console.post(
            CHANGELIST, {"action": "replay", "_selected_action": [row.pk for row in rows], "post": "yes"}
        )

    assert response.status_code == 302
    assert len(after_commit) == 1  # one publish for the batch, not run
    for row in rows:
        row.refresh_from_db()
        assert row.state == RawEventState.RECEIVED
        assert row.replay_count == 1
        assert row.last_replayed_by == STAFF
        assert row.process_error is None
        assert row.dead_lettered_at is None


def test_the_replay_action_leaves_queued_rows_alone(console: Client, django_capture_on_commit_callbacks) -> None:
    queued = store(body_of({"type": "daily", "user": {"user_id": "tu-9"}, "data": []}))

    with django_capture_on_commit_callbacks() as after_commit:
        response = console.post(CHANGELIST, {"action": "replay", "_selected_action": [queued.pk], "post": "yes"})

    assert response.status_code == 302
    assert after_commit == []
    queued.refresh_from_db()
    assert queued.state == RawEventState.RECEIVED
    assert queued.replay_count == 0


def test_mark_skipped_asks_for_confirmation_first(console: Client) -> None:
    dead_row = dead("daily", n=1)

    response = console.post(CHANGELIST, {"action": "mark_skipped", "_selected_action": [dead_row.pk]})

    assert response.status_code == 200
    assert "Yes, mark skipped" in response.content.decode()
    dead_row.refresh_from_db()
    assert dead_row.state == RawEventState.DEAD


def test_mark_skipped_gives_up_on_dead_rows_only_and_is_audited(console: Client) -> None:
    dead_row = dead("daily", n=1)
    queued = store(body_of({"type": "daily", "user": {"user_id": "tu-9"}, "data": []}))

    response = console.post(
        CHANGELIST, {"action": "mark_skipped", "_selected_action": [dead_row.pk, queued.pk], "post": "yes"}
    )

    assert response.status_code == 302
    record = AuditRecord.objects.get()
    assert (record.actor, record.action, record.raw_event_ids) == (STAFF, "raw_events_mark_skipped", [dead_row.pk])
    dead_row.refresh_from_db()
    queued.refresh_from_db()
    assert dead_row.state == RawEventState.SKIPPED
    assert dead_row.process_error == "skipped:manual"
    assert queued.state == RawEventState.RECEIVED


def test_the_traces_list_renders_without_counting_and_searches_by_request_id(console: Client) -> None:
    now = timezone.now()
    TraceEvent.objects.create(ts=now, request_id="req_a", level="info", event="webhook_start")
    TraceEvent.objects.create(ts=now, request_id="req_b", level="error", event="webhook_failed")

    with CaptureQueriesContext(connection) as queries:
        response = console.get("/console/admin_ops/traceevent/")
    searched = console.get("/console/admin_ops/traceevent/?q=req_b&level=error").context["cl"].result_list

    assert response.status_code == 200
    assert _counts_on(queries, "trace_events") == []
    assert "webhook_start" in response.content.decode()
    assert [row.event for row in searched] == ["webhook_failed"]


def test_the_other_admins_render(console: Client) -> None:
    user = User.objects.create(id="user_console", email="user@example.com")
    connection_row = TerraConnection.objects.create(user=user, terra_user_id="tu-console", provider="GARMIN")
    upload = LabUpload.objects.create(user=user, filename="report.pdf")
    job = ImportJob.objects.create(user=user, format="json")

    for path, text in [
        ("/console/ingest/terraconnection/", "tu-console"),
        (f"/console/ingest/terraconnection/{connection_row.pk}/change/", "tu-console"),
        ("/console/accounts/user/", "user_console"),
        ("/console/accounts/user/user_console/change/", "user@example.com"),
        ("/console/ingest/labupload/", "report.pdf"),
        (f"/console/ingest/labupload/{upload.pk}/change/", "report.pdf"),
        ("/console/ingest/importjob/", f">{job.pk}<"),
        (f"/console/ingest/importjob/{job.pk}/change/", f"import {job.pk} (pending)"),
        ("/console/", "Amy console"),
    ]:
        response = console.get(path)
        assert response.status_code == 200, path
        assert text in response.content.decode(), path


def test_the_consoles_static_files_are_served_by_the_app_itself(client: Client) -> None:
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert b"".join(response.streaming_content).strip()


def test_the_filters_counts_are_never_shown_even_when_asked_for(console: Client) -> None:
    dead("daily", n=1)

    with CaptureQueriesContext(connection) as queries:
        response = console.get(f"{CHANGELIST}?_facets=True")

    assert response.status_code == 200
    assert _counts_on(queries, "raw_events") == []


def _rows(count: int) -> None:
    RawEvent.objects.bulk_create(
        RawEvent(event_type="daily", terra_user_id="tu-many", payload="{}", dedup_key=f"many-{n}") for n in range(count)
    )


def test_the_pages_offered_end_where_the_rows_do(console: Client) -> None:
    _rows(205)  # list_per_page is 100

    first = console.get(CHANGELIST).context["cl"]
    last = console.get(f"{CHANGELIST}?p=3").context["cl"]

    assert first.paginator.num_pages == 2  # known so far: this page and one row past it
    assert len(first.result_list) == 100
    assert last.paginator.num_pages == 3
    assert len(last.result_list) == 5


def test_show_all_never_loads_more_than_one_page(console: Client) -> None:
    _rows(205)

    cl = console.get(f"{CHANGELIST}?all=").context["cl"]

    assert len(cl.result_list) == 100
