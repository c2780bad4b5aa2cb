from __future__ import annotations

import sys
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand
from tqdm import tqdm

from ingest.services.renormalize import RENORMALIZED_TYPES, raw_events_renormalize, raw_events_to_renormalize


class Command(BaseCommand):
    help = "Re-run stored ledger rows through today's normalizers (after a parser fix), idempotently."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--type", dest="event_type", choices=RENORMALIZED_TYPES)
        parser.add_argument("--since", type=date.fromisoformat, help="received on or after this date (YYYY-MM-DD)")
        parser.add_argument("--user", dest="user_id", help="only this user's rows")
        parser.add_argument("--dry-run", action="store_true", help="compute the summary, write nothing")

    def handle(
        self, *args: Any, event_type: str | None, since: date | None, user_id: str | None, **options: Any
    ) -> None:
        dry_run: bool = options["dry_run"]
        rows = raw_events_to_renormalize(event_type=event_type, since=since, user_id=user_id)
        total = rows.count()
        if total == 0:
            self.stdout.write("nothing to renormalize")
            return
        with tqdm(total=total, unit="event", file=sys.stderr, disable=None) as progress:
            summary = raw_events_renormalize(rows, dry_run=dry_run, on_each=progress.update)
        written = summary.written
        lines = [
            f"{'dry run: ' if dry_run else ''}{summary.events} events renormalized",
            *(f"  {state:<18} {count}" for state, count in sorted(summary.by_state.items())),
            f"  {'failed':<18} {summary.failed}",
            "typed rows:",
            f"  {'inserted':<18} {written.inserted}",
            f"  {'changed':<18} {written.changed}",
            f"  {'unchanged':<18} {written.unchanged}",
            f"  {'deleted':<18} {written.deleted}",
        ]
        self.stdout.write("\n".join(lines))
