from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from admin_ops.services import ledger_stats


class Command(BaseCommand):
    help = "Ledger counts by state and by event type, and the age of the oldest unprocessed row."

    def handle(self, *args: Any, **options: Any) -> None:
        stats = ledger_stats()
        self.stdout.write(f"{'state':<24}{'rows':>12}")
        for state, n in stats["by_state"].items():
            self.stdout.write(f"{state:<24}{n:>12}")
        self.stdout.write("")
        self.stdout.write(f"{'event_type':<24}{'rows':>12}")
        for event_type, n in stats["by_type"].items():
            self.stdout.write(f"{event_type:<24}{n:>12}")
        age = stats["oldest_unprocessed_age_seconds"]
        self.stdout.write("")
        self.stdout.write("summary")
        self.stdout.write(f"{'total':<24}{sum(stats['by_state'].values()):>12}")
        self.stdout.write(f"{'oldest_unprocessed_age':<24}{'-' if age is None else f'{age:.0f}s':>12}")
