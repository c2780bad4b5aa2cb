"""DELETE /v1/me: the account and its data are erased, asynchronously and once.

What the promise means here: after the erasure, nothing of the user's health data is left in our
database or file store (ledger rows stay as tombstones without payload), Terra was asked to
deauthorize each connection, tokens issued before the request no longer work, and a later sign-in
starts a new, empty account. Terra being down delays the erasure (retries) but never keeps the
data: the last attempt erases the rows regardless and records what it could not do.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import jwt
import pytest
from django.conf import settings as django_settings
from django.core.files.base import ContentFile
from django.test import Client
from django.utils import timezone

from accounts.erasure import user_erasure_request
from accounts.models import CliToken, IdempotencyKey, User, UserErasure
from accounts.tokens import cli_token_issue
from admin_ops.models import TraceEvent
from ingest.models import ImportJob, LabUpload, RawEvent, RawEventSource, RawEventState, SyncDeletion, TerraConnection
from ingest.services.erasure import EraseStatus, erasures_requeue, user_erase
from ingest.terra_client import TerraUnavailable
from ingest.uploads import uploads_storage
from tests.fake_terra import FakeTerra
from tests.ingest.test_terra_account import (
    OTHER_ID,
    USER_ID,
    assert_error,
    connection,
    ledger_row,
    rows_of,
    typed_rows,
)
from tests.ledger import deliver
from tests.queues import queued_task_kwargs
from tests.terra import body_of, sample

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.ingest.account_urls")]


@pytest.fixture
def user() -> User:
    return User.objects.create(id=USER_ID, email="one@example.com")


@pytest.fixture
def other() -> User:
    return User.objects.create(id=OTHER_ID)


def bearer(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {cli_token_issue(user=user).token}"}


def bearer_of(claims: dict[str, object]) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt.encode(claims, django_settings.AMY_JWT_SECRET, algorithm='HS256')}"}


def unrecorded_token() -> dict[str, str]:
    """A valid token issued now that no row of ours records (a CLI token without jti, as the
    source minted them): it stands for a Clerk token, which outlives anything we delete."""
    now = int(time.time())
    claims = {"sub": USER_ID, "iat": now, "exp": now + 600, "v": 1}
    return {"Authorization": f"Bearer {jwt.encode(claims, django_settings.AMY_JWT_SECRET, algorithm='HS256')}"}


@pytest.fixture
def seeded(user: User, other: User) -> dict[str, object]:
    """Two connections with typed rows and ledger rows, a lab upload with a stored file, an import
    with a stored file and an imported ledger row; and another user's data that must stay."""
    storage = uploads_storage()
    connection(user, "t1", provider="OURA")
    connection(user, "t2", provider="GARMIN", status="deauthorized")  # Terra is not asked again
    connection(other, "t-other")
    typed_rows(user, "t1", "OURA")
    typed_rows(user, "t2", "GARMIN")
    typed_rows(other, "t-other", "OURA")
    lab_key = storage.save(f"labs/{USER_ID}/1/report.pdf", ContentFile(b"%PDF-1.7 lab"))
    LabUpload.objects.create(user=user, storage_key=lab_key, terra_upload_id="upl_1")
    import_key = storage.save(f"imports/{USER_ID}/1.ndjson", ContentFile(b"{}\n"))
    ImportJob.objects.create(user=user, storage_key=import_key, format="ndjson")
    return {
        "lab_key": lab_key,
        "import_key": import_key,
        "ledger": [
            ledger_row("t1", 1),
            ledger_row("t2", 2),
            ledger_row("t9", 3, user=user, source=RawEventSource.IMPORT),  # the user's import
            ledger_row("t1", 4, state=RawEventState.RECEIVED),
        ],
        "lab_report": RawEvent.objects.create(
            event_type="lab_report", reference_id="upl_1", payload="{}", dedup_key="lab-1"
        ),
        "theirs": ledger_row("t-other", 5),
    }


def wait_for(predicate, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.1)


def test_delete_me_answers_pending_and_repeats_idempotently(client: Client, user: User) -> None:
    headers = bearer(user)
    first = client.delete("/v1/me", headers=headers)
    assert first.status_code == 202, first.content
    assert first.json() == {"id": USER_ID, "status": "pending"}
    again = client.delete("/v1/me", headers=headers)
    assert (again.status_code, again.json()) == (202, {"id": USER_ID, "status": "pending"})
    assert UserErasure.objects.filter(pk=USER_ID, completed_at=None).count() == 1


def test_tokens_issued_before_the_request_are_refused_except_to_repeat_it(client: Client, user: User) -> None:
    headers = bearer(user)
    assert client.delete("/v1/me", headers=headers).status_code == 202
    error = assert_error(client.get("/v1/me", headers=headers), 401, "invalid_token")
    assert "erased" in error["message"]


def test_the_erasure_removes_the_users_data_and_keeps_everyone_elses(
    user: User, other: User, seeded: dict, fake_terra: FakeTerra, settings
) -> None:
    settings.TERRA_API_BASE_URL, settings.TERRA_API_CONFIGURED = fake_terra.url, True
    fake_terra.reset()
    UserErasure.objects.create(user_id=USER_ID, requested_at=timezone.now())

    assert user_erase(user_id=USER_ID, final_attempt=False) == EraseStatus.ERASED

    assert [(r.method, r.path, r.query) for r in fake_terra.requests] == [
        ("DELETE", "/v2/auth/deauthenticateUser", {"user_id": ["t1"]})
    ]
    assert not User.objects.filter(pk=USER_ID).exists()
    assert not TerraConnection.objects.filter(user_id=USER_ID).exists()
    assert not CliToken.objects.filter(user_id=USER_ID).exists()
    assert rows_of(user, "t1") == rows_of(user, "t2") == 0
    assert not LabUpload.objects.filter(user_id=USER_ID).exists()
    assert not ImportJob.objects.filter(user_id=USER_ID).exists()
    storage = uploads_storage()
    assert not storage.exists(seeded["lab_key"])
    assert not storage.exists(seeded["import_key"])
    for row in [*seeded["ledger"], seeded["lab_report"]]:
        row.refresh_from_db()  # the row stays: a tombstone without its body
        assert row.payload is None
    waiting = seeded["ledger"][3]
    assert (waiting.state, waiting.process_error) == (RawEventState.SKIPPED, "skipped:connection_inactive")
    assert not SyncDeletion.objects.filter(user_id=USER_ID).exists()
    # Nothing of the other user moved.
    assert rows_of(other, "t-other") == 7
    seeded["theirs"].refresh_from_db()
    assert seeded["theirs"].payload is not None
    erasure = UserErasure.objects.get(pk=USER_ID)
    assert erasure.completed_at is not None
    assert erasure.errors == []
    # Run again (a redelivered message): nothing to do, Terra not asked again.
    assert user_erase(user_id=USER_ID, final_attempt=False) == EraseStatus.ALREADY_DONE
    assert len(fake_terra.requests) == 1


def test_terra_down_retries_then_the_last_attempt_erases_anyway(
    user: User, seeded: dict, fake_terra: FakeTerra, settings
) -> None:
    settings.TERRA_API_BASE_URL, settings.TERRA_API_CONFIGURED = fake_terra.url, True
    fake_terra.reset()
    fake_terra.path_status["/v2/auth/deauthenticateUser"] = 503
    UserErasure.objects.create(user_id=USER_ID, requested_at=timezone.now())

    with pytest.raises(TerraUnavailable):
        user_erase(user_id=USER_ID, final_attempt=False)
    assert rows_of(user, "t1") == 7  # a retry comes: nothing erased yet

    assert user_erase(user_id=USER_ID, final_attempt=True) == EraseStatus.ERASED
    assert rows_of(user, "t1") == 0
    assert not User.objects.filter(pk=USER_ID).exists()
    erasure = UserErasure.objects.get(pk=USER_ID)
    assert [(e["step"], e["target"]) for e in erasure.errors] == [("terra_deauthorize", "t1")]
    assert erasure.attempts == 2


def test_after_the_erasure_old_tokens_fail_and_a_new_sign_in_starts_empty(client: Client, user: User, settings) -> None:
    old_cli = bearer(user)
    old = unrecorded_token()  # as a Clerk token: nothing of ours to delete with the account
    connection(user, "t1")
    UserErasure.objects.create(user_id=USER_ID, requested_at=timezone.now())
    user_erase(user_id=USER_ID, final_attempt=True)

    assert_error(client.get("/v1/me", headers=old_cli), 401, "invalid_token")  # deleted with the account
    error = assert_error(client.get("/v1/me", headers=old), 401, "invalid_token")
    assert "erased" in error["message"]
    assert not User.objects.filter(pk=USER_ID).exists()  # the old token did not bring it back

    # A token issued after the erasure (iat has whole seconds: move the erasure back instead of
    # waiting). Without a jti, as the source minted them, so no user row is needed to issue it.
    UserErasure.objects.filter(pk=USER_ID).update(requested_at=timezone.now() - timedelta(seconds=2))
    body = client.get("/v1/me", headers=unrecorded_token()).json()
    assert body["user"]["id"] == USER_ID
    assert body["connections"] == []


def test_erasures_left_unfinished_are_queued_again_by_the_drain(user: User, other: User) -> None:
    UserErasure.objects.create(user_id=USER_ID, requested_at=timezone.now() - timedelta(hours=1))
    UserErasure.objects.create(user_id=OTHER_ID, requested_at=timezone.now())  # too recent
    UserErasure.objects.create(
        user_id="done", requested_at=timezone.now() - timedelta(hours=2), completed_at=timezone.now()
    )
    assert erasures_requeue() == [USER_ID]


@pytest.mark.live
def test_delete_me_is_carried_out_by_the_worker(client: Client, user: User, live_worker, redis_client) -> None:
    headers = bearer(user)
    typed_rows(user, "t1", "OURA")
    assert client.delete("/v1/me", headers=headers).status_code == 202
    wait_for(lambda: UserErasure.objects.filter(pk=USER_ID, completed_at__isnull=False).exists())
    assert not User.objects.filter(pk=USER_ID).exists()
    assert rows_of(user, "t1") == 0


# --- an erasure stays erased ---------------------------------------------------------------------


def erased(user: User) -> None:
    """The account erased (Terra not configured: nothing to ask it)."""
    UserErasure.objects.create(user_id=user.pk, requested_at=timezone.now() - timedelta(seconds=2))
    assert user_erase(user_id=user.pk, final_attempt=True) == EraseStatus.ERASED


def late(name: str, **changes: object) -> bytes:
    """A sample webhook naming USER_ID as Terra's reference id."""
    payload = json.loads(sample(name))
    for part in ("user", "new_user", "old_user"):
        if isinstance(payload.get(part), dict):
            payload[part]["reference_id"] = USER_ID
    if "reference_id" in payload:
        payload["reference_id"] = USER_ID
    payload.update(changes)
    return body_of(payload)


@pytest.mark.parametrize("name", ["auth_success", "user_reauth", "daily", "sleep", "deauth", "permission_change"])
def test_a_late_webhook_naming_an_erased_user_is_skipped_and_creates_nothing(
    user: User, redis_client, name: str
) -> None:
    erased(user)

    row = deliver(late(name))

    assert (row.state, row.process_error) == (RawEventState.SKIPPED, "skipped:user_erased")
    assert row.payload is None  # no new copy of the person's data either
    assert not User.objects.filter(pk=USER_ID).exists()
    assert not TerraConnection.objects.exists()
    assert queued_task_kwargs(redis_client, "amy") == []  # no backfill asked of Terra


def test_a_late_auth_during_the_erasure_creates_no_connection(user: User, redis_client) -> None:
    user_erasure_request(user=user)

    row = deliver(late("auth_success"))

    assert (row.state, row.process_error) == (RawEventState.SKIPPED, "skipped:user_erased")
    assert not TerraConnection.objects.exists()
    assert queued_task_kwargs(redis_client, "amy") == []


def test_once_a_new_account_exists_its_auth_connects_it(user: User, redis_client) -> None:
    erased(user)
    User.objects.create(id=USER_ID)  # a later sign-in

    row = deliver(late("auth_success"))

    assert row.state == RawEventState.PROCESSED
    connected = TerraConnection.objects.get(user_id=USER_ID)
    # the backfill is asked for here (what the erased user's late auth must not do)
    assert queued_task_kwargs(redis_client, "amy") == [
        {"connection_id": connected.pk, "days": django_settings.AMY_BACKFILL_DAYS}
    ]


def test_a_token_issued_before_the_erasure_is_refused_after_a_new_sign_in(client: Client, user: User) -> None:
    now = int(time.time())
    # Valid, unrevocable tokens (as a Clerk token would be), issued a minute before the erasure.
    old = {"sub": USER_ID, "iat": now - 60, "exp": now + 600, "v": 1}
    old_with_jti = {**old, "jti": "a-jti-of-no-row"}
    UserErasure.objects.create(user_id=USER_ID, requested_at=timezone.now() - timedelta(seconds=2))
    user_erase(user_id=USER_ID, final_attempt=True)
    assert client.get("/v1/me", headers=unrecorded_token()).status_code == 200  # a later sign-in
    assert User.objects.filter(pk=USER_ID).exists()

    error = assert_error(client.get("/v1/me", headers=bearer_of(old)), 401, "invalid_token")
    assert "erased" in error["message"]
    assert_error(client.get("/v1/me", headers=bearer_of(old_with_jti)), 401, "invalid_token")
    assert client.get("/v1/me", headers=unrecorded_token()).status_code == 200  # the new account's own


def test_parked_events_and_import_entries_naming_the_user_are_redacted(user: User) -> None:
    parked = RawEvent.objects.create(
        event_type="daily",
        terra_user_id="t-never-connected",
        reference_id=USER_ID,
        payload="{}",
        dedup_key="parked-1",
        state=RawEventState.PARKED,
    )
    job = ImportJob.objects.create(user=user, format="ndjson")
    # An import entry whose row lost its owner (the owner's foreign key is SET NULL) keeps its job.
    entry = RawEvent.objects.create(
        event_type="daily",
        terra_user_id="t-imported",
        payload="{}",
        dedup_key="import-1",
        source=RawEventSource.IMPORT,
        import_id=job.pk,
        state=RawEventState.RECEIVED,
    )
    someone_elses = RawEvent.objects.create(
        event_type="daily",
        terra_user_id="t-x",
        reference_id="someone",
        payload="{}",
        dedup_key="parked-2",
        state=RawEventState.PARKED,
    )
    erased(user)

    for row in (parked, entry):
        row.refresh_from_db()
        assert (row.payload, row.state, row.process_error) == (None, RawEventState.SKIPPED, "skipped:user_erased")
    someone_elses.refresh_from_db()
    assert (someone_elses.payload, someone_elses.state) == ("{}", RawEventState.PARKED)


def test_idempotency_entries_and_traces_naming_the_user_are_deleted(user: User, other: User) -> None:
    now = timezone.now()
    for owner in (user, other):
        IdempotencyKey.objects.create(
            user=owner,
            key="k1",
            fingerprint="f",
            claim=uuid.uuid4(),
            locked_until=now,
            status=201,
            content=b"{}",
            created_at=now,
            expires_at=now + timedelta(hours=1),
        )
    connection(user, "t1")
    event = ledger_row("t1", 1)
    trace = {"ts": now, "level": "INFO", "event": "x"}
    TraceEvent.objects.bulk_create(
        [
            TraceEvent(user_id=USER_ID, **trace),
            TraceEvent(terra_user_id="t1", **trace),
            TraceEvent(raw_event_id=event.pk, **trace),
            TraceEvent(user_id=OTHER_ID, **trace),
        ]
    )
    erased(user)

    assert list(IdempotencyKey.objects.values_list("user_id", flat=True)) == [OTHER_ID]
    assert list(TraceEvent.objects.values_list("user_id", flat=True)) == [OTHER_ID]


def test_a_late_event_naming_only_an_erased_terra_user_is_skipped_too(user: User) -> None:
    connection(user, "t-gone")
    erased(user)
    payload = json.loads(sample("daily"))
    payload["user"]["user_id"], payload["user"]["reference_id"] = "t-gone", None

    row = deliver(body_of(payload))

    assert (row.state, row.process_error, row.payload) == (RawEventState.SKIPPED, "skipped:user_erased", None)
    # Once a new account exists, such an event waits for a connection as any other would.
    User.objects.create(id=USER_ID)
    payload["n"] = 2
    assert deliver(body_of(payload)).state == RawEventState.PARKED
