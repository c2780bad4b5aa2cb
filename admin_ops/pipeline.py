"""The pipeline at a glance, and dead letters grouped by what killed them.

Every figure comes from an index and never counts the whole ledger (bench/console.py measures
them on a 1,000,000-row ledger; docs/performance.md has the figures):
- received per minute and by state over a window: a range of `raw_events_received_at_idx`;
- the backlog and its oldest row: the partial index of waiting rows (`raw_events_unprocessed_idx`),
  counted up to a cap;
- dead letters: the partial index of dead rows by `dead_lettered_at` (`raw_events_dead_idx`),
  the newest DEAD_SCAN_LIMIT of the window read and grouped here by error signature.

An error signature is the error with what varies from event to event folded away: quoted values,
UUIDs, long hex strings, prefixed ids (`req_01K…`) and numbers. Two events that died of the same
parser error or the same refused connection land in one group, whatever ids they name.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from admin_ops.services import UNHEALTHY_ERRORED, queue_depths
from ingest.models import RawEventState

BACKLOG_COUNT_CAP = 100_000
DEAD_SCAN_LIMIT = 5_000
GLANCE_GROUPS = 20
MAX_GROUP_HOURS = 24 * 30
# The drain runs every 5 minutes: a row still waiting after three runs means nothing consumes.
OLDEST_WAITING_WARNING_SECONDS = 15 * 60

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`")
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_PREFIXED_ID = re.compile(r"\b[A-Za-z]{1,12}_[0-9A-Za-z]{10,}\b")
_HEX = re.compile(r"\b(?=[0-9a-fA-F]*[0-9])(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{12,}\b")
_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?\d+(?:[.,:]\d+)*")
_SPACE = re.compile(r"\s+")
_MAX_SIGNATURE = 300


@functools.lru_cache(maxsize=8192)
def error_signature(error: str | None) -> str:
    """The error with ids, numbers and quoted values folded (`<str>`, `<id>`, `<n>`). Cached: the
    same error text recurs across events and across page views."""
    text = error or "(no error recorded)"
    text = _QUOTED.sub("<str>", text)
    text = _UUID.sub("<id>", text)
    text = _PREFIXED_ID.sub("<id>", text)
    text = _HEX.sub("<id>", text)
    text = _NUMBER.sub("<n>", text)
    text = _SPACE.sub(" ", text).strip()
    return text[:_MAX_SIGNATURE]


def signature_key(signature: str) -> str:
    """A short, URL-safe name for a signature."""
    return hashlib.sha256(signature.encode()).hexdigest()[:16]


# Dead-letter groups ------------------------------------------------------------------------------


@dataclass
class DeadGroup:
    signature: str
    key: str
    count: int = 0
    event_types: Counter[str] = field(default_factory=Counter)
    newest_at: datetime | None = None
    oldest_at: datetime | None = None
    sample_error: str = ""
    sample_id: int = 0
    ids: list[int] = field(default_factory=list)

    @property
    def types_text(self) -> str:
        return ", ".join(f"{event_type} ({n:,})" for event_type, n in self.event_types.most_common(4))


@dataclass
class DeadLetters:
    hours: int
    groups: list[DeadGroup]
    scanned: int
    capped: bool  # more dead rows in the window than were read

    @property
    def total(self) -> int:
        return self.scanned

    @property
    def shown(self) -> list[DeadGroup]:
        return self.groups[:GLANCE_GROUPS]

    @property
    def hidden_groups(self) -> int:
        return max(len(self.groups) - GLANCE_GROUPS, 0)


# The dead rows' partial index (raw_events_dead_idx), newest first, from the window's start.
_DEAD_SQL = """
SELECT id, event_type, process_error, dead_lettered_at
FROM raw_events
WHERE state = 'dead' AND dead_lettered_at >= %(since)s
ORDER BY dead_lettered_at DESC, id DESC
LIMIT %(limit)s
"""


def dead_letter_groups(*, hours: int = 24, now: datetime | None = None) -> DeadLetters:
    """Dead rows dead-lettered in the last `hours`, newest first, grouped by error signature;
    the biggest group first."""
    since = (now or timezone.now()) - timedelta(hours=hours)
    with connection.cursor() as cursor:
        cursor.execute(_DEAD_SQL, {"since": since, "limit": DEAD_SCAN_LIMIT + 1})
        rows = cursor.fetchall()
    capped = len(rows) > DEAD_SCAN_LIMIT
    rows = rows[:DEAD_SCAN_LIMIT]
    groups: dict[str, DeadGroup] = {}
    for raw_event_id, event_type, error, dead_at in rows:
        signature = error_signature(error)
        group = groups.get(signature)
        if group is None:
            group = groups[signature] = DeadGroup(
                signature=signature,
                key=signature_key(signature),
                newest_at=dead_at,
                sample_error=error or "",
                sample_id=raw_event_id,
            )
        group.count += 1
        group.event_types[event_type] += 1
        group.oldest_at = dead_at
        group.ids.append(raw_event_id)
    ordered = sorted(groups.values(), key=lambda g: (-g.count, -(g.newest_at.timestamp() if g.newest_at else 0)))
    return DeadLetters(hours=hours, groups=ordered, scanned=len(rows), capped=capped)


def dead_letter_group(*, key: str, hours: int = 24) -> tuple[DeadGroup | None, DeadLetters]:
    """One group by its key (None when no dead row of the window has that signature)."""
    dead = dead_letter_groups(hours=hours)
    return next((group for group in dead.groups if group.key == key), None), dead


def clamp_hours(value: str | None, default: int = 24) -> int:
    try:
        hours = int(value) if value else default
    except ValueError:
        hours = default
    return min(max(hours, 1), MAX_GROUP_HOURS)


# The glance --------------------------------------------------------------------------------------


@dataclass
class Glance:
    now: datetime
    per_minute: list[tuple[datetime, int]]
    by_state_24h: dict[str, int]
    backlog: int
    backlog_capped: bool
    oldest_waiting_age: float | None
    queue_depth: int | None
    dlq_depth: int | None
    dead: DeadLetters
    problems: list[str]

    @property
    def received_last_hour(self) -> int:
        return sum(n for _, n in self.per_minute)

    @property
    def peak_per_minute(self) -> int:
        return max((n for _, n in self.per_minute), default=0)

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def total_24h(self) -> int:
        return sum(self.by_state_24h.values())


_PER_MINUTE_SQL = """
SELECT date_trunc('minute', received_at) AS minute, count(*)
FROM raw_events
WHERE received_at >= %(since)s
GROUP BY 1
"""

_BY_STATE_SQL = """
SELECT state, count(*)
FROM raw_events
WHERE received_at >= %(since)s
GROUP BY state
"""

# Counted from the waiting rows' partial index, up to a cap: a lost queue may leave a million.
_BACKLOG_SQL = """
SELECT count(*) FROM (
    SELECT 1 FROM raw_events WHERE state IN ('received', 'processing') LIMIT %(cap)s
) AS waiting
"""

_OLDEST_SQL = """
SELECT queued_at FROM raw_events
WHERE state IN ('received', 'processing')
ORDER BY queued_at, id
LIMIT 1
"""


def received_per_minute(*, now: datetime, minutes: int = 60) -> list[tuple[datetime, int]]:
    """Rows received in each of the last `minutes` whole minutes and the current one, oldest first."""
    current = now.replace(second=0, microsecond=0)
    first = current - timedelta(minutes=minutes - 1)
    with connection.cursor() as cursor:
        cursor.execute(_PER_MINUTE_SQL, {"since": first})
        counts = dict(cursor.fetchall())
    return [(first + timedelta(minutes=i), counts.get(first + timedelta(minutes=i), 0)) for i in range(minutes)]


def ledger_by_state(*, since: datetime) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(_BY_STATE_SQL, {"since": since})
        found = dict(cursor.fetchall())
    return {state: found.get(state, 0) for state in RawEventState.values}


def backlog() -> tuple[int, bool, float | None]:
    """(rows waiting, up to BACKLOG_COUNT_CAP; whether capped; age of the oldest in seconds)."""
    with connection.cursor() as cursor:
        cursor.execute(_BACKLOG_SQL, {"cap": BACKLOG_COUNT_CAP + 1})
        (waiting,) = cursor.fetchone()
        cursor.execute(_OLDEST_SQL)
        oldest = cursor.fetchone()
    age = (timezone.now() - oldest[0]).total_seconds() if oldest else None
    return min(waiting, BACKLOG_COUNT_CAP), waiting > BACKLOG_COUNT_CAP, age


def pipeline_glance() -> Glance:
    """Everything the console's home page shows, each from an index."""
    now = timezone.now()
    per_minute = received_per_minute(now=now)
    by_state = ledger_by_state(since=now - timedelta(hours=24))
    waiting, capped, oldest_age = backlog()
    queue_depth, dlq_depth = queue_depths()
    dead = dead_letter_groups(hours=24, now=now)
    problems = []
    if oldest_age is not None and oldest_age > OLDEST_WAITING_WARNING_SECONDS:
        problems.append(
            f"the oldest waiting event has waited {format_age(oldest_age)} "
            f"(dead-lettered as stale after {format_age(settings.AMY_DRAIN_WINDOW_SECONDS)})"
        )
    if queue_depth is None:
        problems.append("Redis is not answering: nudges wait for the drain")
    if dead.total > UNHEALTHY_ERRORED:
        problems.append(f"{dead.total:,}{'+' if dead.capped else ''} events dead-lettered in the last 24 h")
    return Glance(
        now=now,
        per_minute=per_minute,
        by_state_24h=by_state,
        backlog=waiting,
        backlog_capped=capped,
        oldest_waiting_age=oldest_age,
        queue_depth=queue_depth,
        dlq_depth=dlq_depth,
        dead=dead,
        problems=problems,
    )


def format_age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} days"
