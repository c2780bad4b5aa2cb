"""reconcile_recent: the nightly safety net (Beat `0 3 * * *` UTC, queue `amy`).

For each `active` or `degraded` connection, ask Terra to re-send the last RECONCILE_DAYS days of
activity, sleep, daily and body through the webhook (`to_webhook=true`), so that anything a lost
or refused delivery missed arrives again; the webhook's dedup and the typed tables' upsert make a
repeat harmless.

Bounded and fault-isolated:
- No new connection is started after RECONCILE_TIME_BUDGET_SECONDS; the rest are reported
  `not_reached` (one connection can overrun by at most its four calls' timeouts).
- A connection whose request fails (Terra down, a 4xx for that user) counts as `failed` and the
  run goes on with the next one.
- Terra's data-read limits are per Terra user, so one connection's 429 only ends that
  connection (`rate_limited`); RECONCILE_RATE_LIMIT_STREAK consecutive 429s look like a limit on the
  whole account and stop the run early (`stopped = "rate_limited"`, the rest `not_reached`).
- The run starts at a different connection each day, so a run that cannot reach everyone does not
  always leave out the same connections.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from amy import tracing
from ingest.models import ConnectionStatus, TerraConnection
from ingest.terra_client import BACKFILL_TYPES, TerraClient, TerraError, TerraUnavailable

logger = logging.getLogger(__name__)

RECONCILE_DAYS = 7
RECONCILE_TIME_BUDGET_SECONDS = 600.0
RECONCILE_RATE_LIMIT_STREAK = 3
RECONCILED_STATUSES = (ConnectionStatus.ACTIVE, ConnectionStatus.DEGRADED)


@dataclass
class ReconcileResult:
    connections: int = 0  # active or degraded connections when the run started
    requested: int = 0  # connections whose every type was requested
    failed: int = 0  # connections with a request that failed (other than a 429)
    rate_limited: int = 0  # connections Terra answered 429 for
    not_reached: int = 0  # connections not started: time budget, rate limit or no credentials
    stopped: str = ""  # "", "time_budget", "rate_limited" or "terra_not_configured"

    def as_dict(self) -> dict[str, int | str]:
        return asdict(self)


def reconcile_recent(
    *,
    client: TerraClient | None = None,
    days: int = RECONCILE_DAYS,
    time_budget: float = RECONCILE_TIME_BUDGET_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> ReconcileResult:
    started = clock()
    connections = list(
        TerraConnection.objects.filter(status__in=RECONCILED_STATUSES).order_by("pk").values_list("pk", "terra_user_id")
    )
    result = ReconcileResult(connections=len(connections))
    end = timezone.now().date()
    start = end - timedelta(days=days)
    if connections:
        offset = end.toordinal() % len(connections)
        connections = connections[offset:] + connections[:offset]
    if not settings.TERRA_API_CONFIGURED:
        result.not_reached, result.stopped = len(connections), "terra_not_configured"
    else:
        streak = 0
        with client or TerraClient() as terra:
            for index, (connection_id, terra_user_id) in enumerate(connections):
                if clock() - started >= time_budget:
                    result.not_reached, result.stopped = len(connections) - index, "time_budget"
                    break
                if streak >= RECONCILE_RATE_LIMIT_STREAK:
                    result.not_reached, result.stopped = len(connections) - index, "rate_limited"
                    break
                try:
                    for data_type in BACKFILL_TYPES:
                        terra.request_backfill(data_type=data_type, terra_user_id=terra_user_id, start=start, end=end)
                except TerraUnavailable as exc:
                    if exc.rate_limited:
                        streak += 1
                        result.rate_limited += 1
                    else:
                        streak = 0
                        result.failed += 1
                    logger.warning("reconcile of connection %d failed: %s", connection_id, exc)
                except TerraError as exc:
                    streak = 0
                    result.failed += 1
                    logger.warning("reconcile of connection %d failed: %s", connection_id, exc)
                else:
                    streak = 0
                    result.requested += 1
    trouble = result.failed or result.rate_limited or result.stopped in ("time_budget", "rate_limited")
    (logger.warning if trouble else logger.info)("reconcile_recent: %s", result.as_dict())
    (tracing.warn if trouble else tracing.info)("reconcile_summary", "", **result.as_dict())
    return result
