"""Operators' commands: replay_dead_letters (the bulk replay service) and ledger_stats."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from ingest.models import RawEvent, RawEventState
from tests.admin_ops.helpers import dead

pytestmark = pytest.mark.django_db


def _run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_replay_dead_letters_dry_run_lists_and_changes_nothing(django_capture_on_commit_callbacks) -> None:
    sleep = dead("sleep", n=1)
    dead("daily", n=2)
    with django_capture_on_commit_callbacks() as after_commit:
        output = _run("replay_dead_letters", "--type", "sleep", "--dry-run")
    listed = [line.split()[0] for line in output.splitlines()[1:] if line.strip()[:1].isdigit()]
    assert listed == [str(sleep.pk)]
    assert "dry run: nothing replayed" in output
    assert "matched            1" in output
    assert after_commit == []
    assert set(RawEvent.objects.values_list("state", flat=True)) == {"dead"}


def test_replay_dead_letters_replays_the_filtered_rows_with_lineage(django_capture_on_commit_callbacks) -> None:
    sleep, daily = dead("sleep", n=1), dead("daily", n=2)
    queued = dead("sleep", n=3)
    RawEvent.objects.filter(pk=queued.pk).update(state=RawEventState.RECEIVED)
    with django_capture_on_commit_callbacks() as after_commit:
        output = _run("replay_dead_letters", "--type", "sleep", "--since", "2000-01-01", "--actor", "ops-carol")
    assert "matched            1" in output
    assert "replayed           1" in output
    assert len(after_commit) == 1
    sleep.refresh_from_db()
    daily.refresh_from_db()
    assert (sleep.state, sleep.replay_count, sleep.last_replayed_by) == ("received", 1, "ops-carol")
    assert (daily.state, daily.replay_count) == ("dead", 0)


def test_replay_dead_letters_refuses_a_bad_since() -> None:
    with pytest.raises(CommandError):
        _run("replay_dead_letters", "--since", "last week")


def test_ledger_stats_prints_counts_by_state_and_type_and_the_oldest_age() -> None:
    dead("sleep", n=1)
    dead("daily", n=2)
    received = dead("daily", n=3)
    RawEvent.objects.filter(pk=received.pk).update(state=RawEventState.RECEIVED)
    output = _run("ledger_stats")
    lines = [line.split() for line in output.splitlines()]
    for expected in (["dead", "2"], ["received", "1"], ["processed", "0"], ["daily", "2"], ["sleep", "1"]):
        assert expected in lines
    assert ["total", "3"] in lines
    assert any(line[:1] == ["oldest_unprocessed_age"] and line[1].endswith("s") for line in lines)


def test_ledger_stats_on_an_empty_ledger() -> None:
    output = _run("ledger_stats")
    assert ["oldest_unprocessed_age", "-"] in [line.split() for line in output.splitlines()]
