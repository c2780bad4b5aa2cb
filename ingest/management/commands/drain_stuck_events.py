from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from ingest.services.drain import raw_events_drain


class Command(BaseCommand):
    help = "Re-enqueue stuck ledger rows now (what Beat runs every five minutes)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--limit", type=int, default=settings.AMY_DRAIN_LIMIT)

    def handle(self, *args: Any, limit: int, **options: Any) -> None:
        result = raw_events_drain(limit=limit, window_seconds=settings.AMY_DRAIN_WINDOW_SECONDS)
        self.stdout.write(
            f"selected {result.selected}, published {result.published}, dead-lettered as stale {result.dead_lettered}"
        )
