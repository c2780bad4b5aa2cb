"""The books (harness/books.py) that the fault suite, the soak and the benchmarks end with: they
must see a lost body, a body stored twice, an unfinished row and a missing or doubled typed row,
and find nothing wrong with a run that lost nothing."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from accounts.models import User
from harness.books import Books, SentBody, account, connect
from ingest.models import DailySummary, RawEvent, RawEventState
from tests.conftest import database_url_for_tests

pytestmark = pytest.mark.django_db(transaction=True)

DAILY = {"daily": {"daily_summary": 1}}


def body(n: int) -> bytes:
    return b'{"type": "daily", "n": %d}' % n


def stored(n: int, *, state: str = RawEventState.PROCESSED, error: str | None = None, copy: int = 0) -> RawEvent:
    """The ledger row of body n (`copy` > 0: the same body stored again, under another type)."""
    text = body(n).decode()
    return RawEvent.objects.create(
        event_type="daily" if not copy else f"daily-copy-{copy}",
        payload=text,
        dedup_key=hashlib.sha256(body(n)).hexdigest(),
        state=state,
        process_error=error,
    )


def typed_row(raw_event: RawEvent, user: User, day: int) -> None:
    DailySummary.objects.create(user=user, provider="OURA", date=dt.date(2026, 1, day), raw_event=raw_event)


def books_of(*bodies: SentBody) -> Books:
    with connect(database_url_for_tests()) as conn:
        return account(conn, bodies, rows_per_type=DAILY)


def test_a_run_that_lost_nothing_balances() -> None:
    user = User.objects.create(id="user_books")
    for n in (1, 2):
        typed_row(stored(n), user, n)

    books = books_of(SentBody.of(body(1), ["200"]), SentBody.of(body(2), ["HTTP 503", "200"]))

    assert books.problems() == []
    assert (books.answered_200, books.redelivered, books.typed_rows) == (2, 1, 2)


def test_the_books_see_a_lost_body_a_doubled_body_and_an_unfinished_row() -> None:
    stored(2)
    stored(2, copy=1)
    stored(3, state=RawEventState.RECEIVED)

    books = books_of(*(SentBody.of(body(n), ["200"]) for n in (1, 2, 3)))

    assert (books.missing, books.duplicated, books.unfinished, books.lost) == (1, 1, 1, 2)
    assert "answered 200 but not in the ledger: 1" in books.problems()


def test_the_books_see_typed_rows_missing_or_written_twice() -> None:
    user = User.objects.create(id="user_books")
    stored(1)  # processed, but wrote nothing
    twice = stored(2)
    typed_row(twice, user, 2)
    typed_row(twice, user, 3)

    books = books_of(SentBody.of(body(1), ["200"]), SentBody.of(body(2), ["200"]))

    assert (books.typed_missing, books.typed_duplicated) == (1, 1)


def test_a_client_that_gave_up_is_not_a_loss_for_an_open_loop_sender() -> None:
    typed_row(stored(1), User.objects.create(id="user_books"), 1)

    books = books_of(SentBody.of(body(1), ["ReadTimeout"]), SentBody.of(body(2), ["ConnectError"]))

    assert books.never_200 == 2
    assert books.stored_without_200 == 1
    assert books.problems(every_body_answered=False) == []
    assert books.problems() == ["bodies never answered 200: 2"]
