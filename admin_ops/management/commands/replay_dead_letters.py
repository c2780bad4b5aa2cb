from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from admin_ops.services import ReplayFilter, raw_events_matching, raw_events_replay


def _since(raw: str | None) -> Any:
    if not raw:
        return None
    parsed = parse_datetime(raw)
    if parsed is None and (day := parse_date(raw)) is not None:
        parsed = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if parsed is None:
        raise CommandError(f"--since {raw!r} is not an ISO 8601 date or date-time.")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


class Command(BaseCommand):
    help = "Replay dead-lettered ledger rows (the same service as POST /admin/dlq/replay)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--type", dest="event_type", help="Only this event type.")
        parser.add_argument("--since", help="Only rows dead-lettered at or after this ISO date or date-time.")
        parser.add_argument("--error-contains", help="Only rows whose error contains this text.")
        parser.add_argument("--actor", default="replay_dead_letters", help="Recorded as last_replayed_by.")
        parser.add_argument("--dry-run", action="store_true", help="List what would be replayed; change nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        replay_filter = ReplayFilter(
            event_type=options["event_type"] or None,
            since=_since(options["since"]),
            error_contains=options["error_contains"] or None,
        )
        if options["dry_run"]:
            rows = list(
                raw_events_matching(replay_filter).values_list("id", "event_type", "dead_lettered_at", "process_error")
            )
            self.stdout.write(f"{'id':>10}  {'event_type':<20}  {'dead_lettered_at':<32}  process_error")
            for raw_event_id, event_type, dead_at, error in rows:
                dead = dead_at.isoformat() if dead_at else "-"
                self.stdout.write(f"{raw_event_id:>10}  {event_type:<20}  {dead:<32}  {(error or '')[:80]}")
            self._summary(matched=len(rows), replayed=0, skipped=0, dry_run=True)
            return
        result = raw_events_replay(actor=options["actor"], replay_filter=replay_filter)
        self._summary(matched=result.matched, replayed=result.replayed, skipped=result.skipped, dry_run=False)

    def _summary(self, *, matched: int, replayed: int, skipped: int, dry_run: bool) -> None:
        self.stdout.write("")
        self.stdout.write("dry run: nothing replayed" if dry_run else "summary")
        self.stdout.write(f"{'matched':<10}{matched:>10}")
        self.stdout.write(f"{'replayed':<10}{replayed:>10}")
        self.stdout.write(f"{'skipped':<10}{skipped:>10}")
