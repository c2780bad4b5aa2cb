"""The whole pipeline under load, shared by bench/e2e.py, bench/soak.py and tests/test_soak.py:
signed webhooks sent open-loop, each event's typed rows watched in `/v1/sync` (as the CLI reads
them) and in PostgreSQL, the stack's memory sampled, and the books balanced in SQL at the end.

- Bodies: the daily, sleep, activity and body samples in turn (tests/fixtures/terra), each a
  distinct copy (bench/normalize_load.distinct_body: times moved by whole days, a new summary_id),
  so every webhook is a new ledger row whose typed rows are all new and carry its raw_event_id.
- setup_user (Django): one user, an active Terra connection per sample's Terra user id, a CLI
  token, and how many typed rows each sample makes (the writer's own statements, counted).
- Sender: open-loop. The caller schedules each webhook at a fixed time and a thread pool sends it
  then, whatever the earlier ones are doing; latencies count from the scheduled time, so a
  sender that falls behind shows in the figures instead of hiding the server's slowness.
- SyncPoller: the CLI's loop: `/v1/sync` from no cursor, following `cursor` while `has_more`, a
  new round every `interval`; the first time a page carries a row with a given raw_event_id is
  when that event became visible to the CLI.
- DbPoller: the same question asked of PostgreSQL directly (the typed tables, every `interval`):
  the pipeline without the API's read path.
- RssSampler: VmRSS of the gunicorn and Celery processes, every few seconds, from /proc.
- account(): answered 200 = ledger rows exactly once = processed or visibly dead-lettered, and
  each processed event's typed rows exactly as many as its body makes (none lost, none doubled).

`python -m bench.pipeline setup` runs setup_user in a Django process and prints `result <json>`.
Nothing here imports Django at module level, and nothing imports tests (tests may import this).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import psycopg

from bench.common import (
    RESULTS,
    bench_worker,
    django_helper,
    flush_bench_redis,
    migrate,
    percentile,
    recreate_database,
    service_env,
    web_server,
)
from bench.load import WEBHOOK_PATH
from bench.normalize import TYPED_TABLES
from bench.normalize_load import EVENT_TYPES, FIXTURES, distinct_body, writer_statements
from harness.books import Books, RowsPerType, SentBody, wait_final
from harness.books import account as books_account
from harness.processes import children, memory_kib
from ingest.signature import signature_header

USER_ID = "user_bench_pipeline"
MIB = 1024.0
WARMUP = "warmup"  # the kind of the warm-up webhooks, left out of every figure


# Bodies and the user
# ------------------------------------------------------------------------------


def templates() -> dict[str, dict[str, Any]]:
    return {name: json.loads((FIXTURES / f"{name}.json").read_text()) for name in EVENT_TYPES}


class Bodies:
    """Body n of a run: EVENT_TYPES in turn, copy number `first_serial + n // 4` of its sample.
    Warm-up bodies take negative serials, measured ones from 0 up: no natural key is shared."""

    def __init__(self, first_serial: int = 0) -> None:
        self.templates = templates()
        self.first_serial = first_serial

    def make(self, index: int) -> tuple[str, bytes]:
        event_type = EVENT_TYPES[index % len(EVENT_TYPES)]
        payload = distinct_body(self.templates[event_type], event_type, self.first_serial + index // len(EVENT_TYPES))
        return event_type, json.dumps(payload, separators=(",", ":")).encode()

    def many(self, count: int, first_index: int = 0) -> list[tuple[str, bytes]]:
        """Built before the clock starts: making a body costs more than sending it."""
        return [self.make(i) for i in range(first_index, first_index + count)]


def setup_user(user_id: str = USER_ID) -> dict[str, Any]:
    """(Django) The user, its active Terra connections and a CLI token; the typed rows per sample.

    Rows per sample are counted from the statements the writer would run for it (bench's
    normalize_load.writer_statements, which dedupes by natural key as the writer does)."""
    from accounts.models import User
    from accounts.tokens import cli_token_issue
    from ingest.models import ConnectionStatus, TerraConnection
    from ingest.normalizers import activity, body, daily, sleep

    parsers = {"daily": daily.parse, "sleep": sleep.parse, "activity": activity.parse, "body": body.parse}
    user, _ = User.objects.get_or_create(id=user_id)
    rows_per_type: dict[str, dict[str, int]] = {}
    for event_type, template in templates().items():
        terra_user_id, provider = template["user"]["user_id"], template["user"]["provider"]
        TerraConnection.objects.get_or_create(
            terra_user_id=terra_user_id,
            defaults={"user": user, "provider": provider, "status": ConnectionStatus.ACTIVE},
        )
        statements = writer_statements(
            parsers[event_type](distinct_body(template, event_type, 0)),
            user_id=user.pk,
            provider=provider,
            terra_user_id=terra_user_id,
            raw_event_id=0,
            ordering_ts=0,
        )
        rows_per_type[event_type] = {table: rows for table, _, _, rows in statements}
    return {"user_id": user.pk, "token": cli_token_issue(user=user).token, "rows_per_type": rows_per_type}


def run_setup(env: dict[str, str]) -> dict[str, Any]:
    """setup_user in a Django process on `env`'s database."""
    return django_helper("bench.pipeline", "setup", env=env, timeout=120)


# Sending and watching
# ------------------------------------------------------------------------------


@dataclass
class Sent:
    index: int
    kind: str  # "steady", "burst", WARMUP: which part of a run sent it
    event_type: str
    scheduled: float  # time.monotonic(), as every time here (one clock for every process on Linux)
    started: float = 0.0
    answered: float = 0.0
    status: int = 0  # 0: no answer (connection error, timeout)
    raw_event_id: int | None = None
    error: str | None = None
    sha256: str = ""  # of the body: the ledger's dedup key

    @property
    def outcome(self) -> str:
        return "200" if self.status == 200 else (self.error or f"HTTP {self.status}")


class Tracker:
    """What was sent and answered, and when each raw_event_id was first seen in sync and in SQL."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: list[Sent] = []
        self.by_id: dict[int, Sent] = {}
        self.in_sync: dict[int, float] = {}
        self.in_db: dict[int, float] = {}
        self.pending_db: set[int] = set()

    def record(self, sent: Sent) -> None:
        with self.lock:
            self.sent.append(sent)
            if sent.raw_event_id is not None:
                self.by_id[sent.raw_event_id] = sent
                if sent.raw_event_id not in self.in_db:
                    self.pending_db.add(sent.raw_event_id)

    def seen_in_sync(self, raw_event_id: int, at: float) -> None:
        with self.lock:
            self.in_sync.setdefault(raw_event_id, at)

    def seen_in_db(self, ids: list[int], at: float) -> None:
        with self.lock:
            for raw_event_id in ids:
                self.in_db.setdefault(raw_event_id, at)
                self.pending_db.discard(raw_event_id)

    def answered(self, kinds: tuple[str, ...] | None = None) -> list[Sent]:
        """Webhooks answered 200 with a raw_event_id (of these kinds; default all but the warm-up)."""
        with self.lock:
            sent = list(self.sent)
        return [
            s
            for s in sent
            if s.status == 200 and s.raw_event_id is not None and (s.kind in kinds if kinds else s.kind != WARMUP)
        ]

    def measured(self) -> list[Sent]:
        with self.lock:
            return [s for s in self.sent if s.kind != WARMUP]


class Sender:
    """Sends each webhook at its scheduled time from a pool of threads (open loop), signed with
    the time of sending; one new connection per request, as gunicorn's sync workers close it."""

    def __init__(self, url: str, secret: str, tracker: Tracker, *, threads: int = 256, label: str = "pipeline"):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.secret = secret
        self.tracker = tracker
        self.label = label
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sender")

    def submit(self, sent: Sent, body: bytes) -> None:
        self.pool.submit(self._send, sent, body)

    def _send(self, sent: Sent, body: bytes) -> None:
        sent.sha256 = hashlib.sha256(body).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "amy-bench",
            "x-bench-phase": f"{self.label}-{sent.kind}",
            "terra-signature": signature_header(body, self.secret, int(time.time())),
        }
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        sent.started = time.monotonic()
        try:
            conn.request("POST", WEBHOOK_PATH, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            sent.answered = time.monotonic()
            sent.status = response.status
            if response.status == 200:
                sent.raw_event_id = json.loads(data).get("raw_event_id")
                if sent.raw_event_id is None:
                    sent.error = "200 without raw_event_id (duplicate?)"
            else:
                sent.error = f"HTTP {response.status}"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            sent.answered = time.monotonic()
            sent.error = type(exc).__name__
        finally:
            conn.close()
            self.tracker.record(sent)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def send_steady(
    sender: Sender, bodies: list[tuple[str, bytes]], *, rate: float, first_index: int = 0, kind: str = "steady"
) -> float:
    """Every body at `rate` per second on a fixed schedule (open loop); returns the achieved
    submission rate. Does not wait for the answers."""
    start = time.monotonic()
    for n, (event_type, body) in enumerate(bodies):
        scheduled = start + n / rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sender.submit(Sent(first_index + n, kind, event_type, scheduled), body)
    elapsed = time.monotonic() - start
    return len(bodies) / elapsed if elapsed > 0 else 0.0


def send_burst(sender: Sender, bodies: list[tuple[str, bytes]], *, first_index: int, kind: str = "burst") -> None:
    """Every body at once: as many requests in flight as the sender has threads."""
    scheduled = time.monotonic()
    for n, (event_type, body) in enumerate(bodies):
        sender.submit(Sent(first_index + n, kind, event_type, scheduled), body)


class SyncPoller(threading.Thread):
    """The CLI's sync loop against `/v1/sync`, one round every `interval` seconds."""

    def __init__(self, url: str, token: str, tracker: Tracker, *, interval: float = 0.05, limit: int = 5000):
        super().__init__(daemon=True, name="sync-poller")
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.headers = {"Authorization": f"Bearer {token}", "User-Agent": "amy-bench", "x-bench-phase": "sync"}
        self.tracker = tracker
        self.interval = interval
        self.limit = limit
        self.cursor: str | None = None
        self.requests = 0
        self.errors: Counter[str] = Counter()
        self.request_seconds: list[float] = []
        self._stop = threading.Event()

    def page(self) -> bool:
        """One page; True when more are waiting."""
        query = {"limit": str(self.limit), **({"cursor": self.cursor} if self.cursor else {})}
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        started = time.monotonic()
        try:
            conn.request("GET", f"/v1/sync?{urlencode(query)}", headers=self.headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.errors[type(exc).__name__] += 1
            return False
        finally:
            conn.close()
        at = time.monotonic()
        self.requests += 1
        self.request_seconds.append(at - started)
        if response.status != 200:
            self.errors[f"HTTP {response.status}"] += 1
            return False
        page = json.loads(data)
        for rows in page["tables"].values():
            for row in rows:
                raw_event_id = row.get("raw_event_id")
                if raw_event_id is not None:
                    self.tracker.seen_in_sync(raw_event_id, at)
        self.cursor = page["cursor"]
        return bool(page["has_more"])

    def run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            with contextlib.suppress(ValueError, KeyError):  # a malformed page counts as an error
                while self.page() and not self._stop.is_set():
                    pass
            self._stop.wait(max(0.0, started + self.interval - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self.join(timeout=35)


class DbPoller(threading.Thread):
    """Every `interval` seconds: which answered events have typed rows in PostgreSQL now. Every
    second also: the oldest transaction holding a transaction id anywhere in the cluster, since
    /v1/sync serves only rows below the cluster-wide xmin (ingest/sync.py): on a shared server another database's long
    transaction delays every user's sync, and the report should say so."""

    QUERY = " UNION ALL ".join(f"SELECT raw_event_id FROM {t} WHERE raw_event_id = ANY(%(ids)s)" for t in TYPED_TABLES)
    OLDEST = (
        "SELECT coalesce(datname, '?'), extract(epoch FROM now() - xact_start)::float8 FROM pg_stat_activity "
        "WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() "
        "AND xact_start IS NOT NULL ORDER BY xact_start LIMIT 1"
    )

    def __init__(self, database_url: str, tracker: Tracker, *, interval: float = 0.05):
        super().__init__(daemon=True, name="db-poller")
        self.database_url = database_url
        self.tracker = tracker
        self.interval = interval
        self.errors = 0
        self.oldest_transaction: tuple[float, str] = (0.0, "-")  # (seconds open, database)
        self._stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as conn:
            checked = 0.0
            while not self._stop.is_set():
                started = time.monotonic()
                with self.tracker.lock:
                    pending = list(self.tracker.pending_db)
                try:
                    if pending:
                        rows = conn.execute(self.QUERY, {"ids": pending}).fetchall()
                        self.tracker.seen_in_db([r[0] for r in rows], time.monotonic())
                    if started - checked >= 1.0:
                        checked = started
                        oldest = conn.execute(self.OLDEST).fetchone()
                        if oldest and oldest[1] > self.oldest_transaction[0]:
                            self.oldest_transaction = (oldest[1], oldest[0])
                except psycopg.Error:
                    self.errors += 1
                self._stop.wait(max(0.0, started + self.interval - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self.join(timeout=35)


def wait_visible(tracker: Tracker, timeout: float, *, sync: bool = True) -> int:
    """Wait until every answered event is seen (in sync, or in SQL); how many are still missing."""
    deadline = time.monotonic() + timeout
    while True:
        ids = {s.raw_event_id for s in tracker.answered()}
        with tracker.lock:
            missing = len(ids - set(tracker.in_sync if sync else tracker.in_db))
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.1)


# Figures
# ------------------------------------------------------------------------------


@dataclass
class Latency:
    """Milliseconds from each event's scheduled send to a moment, over the events that reached it."""

    count: int
    missing: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, sent: list[Sent], reached: dict[int, float] | None = None, *, answer: bool = False) -> Latency:
        values, missing = [], 0
        for s in sent:
            at = s.answered if answer else (reached or {}).get(s.raw_event_id or -1)
            if at:
                values.append(1000 * (at - s.scheduled))
            else:
                missing += 1
        values.sort()
        return cls(
            len(values),
            missing,
            percentile(values, 50),
            percentile(values, 95),
            percentile(values, 99),
            values[-1] if values else None,
        )


def between(reached_first: dict[int, float], reached_then: dict[int, float], sent: list[Sent]) -> Latency:
    """Milliseconds from one moment to a later one, per event that reached both (e.g. SQL -> sync)."""
    values = sorted(
        1000 * (reached_then[s.raw_event_id] - reached_first[s.raw_event_id])
        for s in sent
        if s.raw_event_id in reached_first and s.raw_event_id in reached_then
    )
    return Latency(
        len(values),
        len(sent) - len(values),
        percentile(values, 50),
        percentile(values, 95),
        percentile(values, 99),
        values[-1] if values else None,
    )


def ledger_latency(conn: psycopg.Connection[Any], ids: list[int]) -> Latency:
    """received_at -> processed_at of these ledger rows (the database's clock: the webhook's
    INSERT and the start of the worker's transaction)."""
    rows = conn.execute(
        "SELECT 1000 * extract(epoch FROM processed_at - received_at)::float8 FROM raw_events "
        "WHERE id = ANY(%s) AND processed_at IS NOT NULL ORDER BY 1",
        [ids],
    ).fetchall()
    values = [float(r[0]) for r in rows]
    return Latency(
        len(values),
        len(ids) - len(values),
        percentile(values, 50),
        percentile(values, 95),
        percentile(values, 99),
        values[-1] if values else None,
    )


# Memory
# ------------------------------------------------------------------------------

# Roles whose processes are replaced by design (Celery's max tasks per child) are followed as one
# series, the largest live process at each sample; the others one series per pid.
REPLACED_ROLES = ("celery pool child",)


class RssSampler(threading.Thread):
    """VmRSS of a gunicorn master and its workers, and of a Celery parent and its pool children,
    every `interval` seconds (children listed again at each sample: pool children are replaced)."""

    def __init__(self, *, gunicorn_pid: int, celery_pid: int, interval: float = 2.0):
        super().__init__(daemon=True, name="rss-sampler")
        self.gunicorn_pid = gunicorn_pid
        self.celery_pid = celery_pid
        self.interval = interval
        self.samples: list[tuple[float, str, int, int]] = []  # (monotonic, role, pid, VmRSS KiB)
        self._stop = threading.Event()

    def sample(self) -> None:
        at = time.monotonic()
        processes = [("gunicorn master", self.gunicorn_pid), ("celery parent", self.celery_pid)]
        processes += [("gunicorn worker", pid) for pid in children(self.gunicorn_pid)]
        processes += [("celery pool child", pid) for pid in children(self.celery_pid)]
        for role, pid in processes:
            rss, _ = memory_kib(pid)
            if rss:
                self.samples.append((at, role, pid, rss))

    def run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self.join(timeout=10)
        self.sample()


@dataclass
class Growth:
    name: str
    first_mib: float  # mean VmRSS over the first half of the window
    second_mib: float  # ... and over the second half
    peak_mib: float
    samples: int
    pids: int

    @property
    def growth_mib(self) -> float:
        return self.second_mib - self.first_mib

    @property
    def growth_pct(self) -> float:
        return 100 * self.growth_mib / self.first_mib if self.first_mib else 0.0


def memory_growth(samples: list[tuple[float, str, int, int]], start: float, end: float) -> list[Growth]:
    """Growth of each process (or replaced role) from the first half of [start, end] to the second."""
    middle = (start + end) / 2
    series: dict[str, list[tuple[float, int]]] = defaultdict(list)
    pids: dict[str, set[int]] = defaultdict(set)
    largest: dict[tuple[str, float], int] = {}
    for at, role, pid, rss in samples:
        if not start <= at <= end:
            continue
        if role in REPLACED_ROLES:
            name = f"{role} (largest live)"
            largest[(name, at)] = max(largest.get((name, at), 0), rss)
        else:
            name = f"{role} {pid}"
        pids[name].add(pid)
        if role not in REPLACED_ROLES:
            series[name].append((at, rss))
    for (name, at), rss in largest.items():
        series[name].append((at, rss))
    result = []
    for name, points in sorted(series.items()):
        first = [rss for at, rss in points if at < middle]
        second = [rss for at, rss in points if at >= middle]
        if not first or not second:
            continue  # a process that lived in one half only (replaced): no growth to speak of
        result.append(
            Growth(
                name,
                sum(first) / len(first) / MIB,
                sum(second) / len(second) / MIB,
                max(rss for _, rss in points) / MIB,
                len(points),
                len(pids[name]),
            )
        )
    return result


# Accounting
# ------------------------------------------------------------------------------

Accounting = Books


def account(conn: psycopg.Connection[Any], tracker: Tracker, *, after_id: int, rows_per_type: RowsPerType) -> Books:
    """The books of a run (harness/books.py): its ledger rows are those past `after_id` (the
    warm-up's last); each webhook was sent once, so a client that gave up is not a loss."""
    bodies = [SentBody(s.sha256, (s.outcome,)) for s in tracker.measured()]
    return books_account(conn, bodies, rows_per_type=rows_per_type, after_id=after_id)


# The benchmarks' stack: gunicorn and a Celery worker on the bench database
# ------------------------------------------------------------------------------

WORKER_CONCURRENCY = 2  # as scripts/run and docker-compose.yml run the worker


class BenchStack:
    """gunicorn (bench.common.web_server: 2 sync workers, the per-user rate limit raised as in
    bench/api.py so the sync poller is never refused) and `celery worker -c 2` with production
    settings, logs in bench/results."""

    def __init__(self, name: str) -> None:
        from bench.api import web_env

        self.name = name
        self.web = web_server(RESULTS / f"{name}-gunicorn-access.log", RESULTS / f"{name}-gunicorn.log", env=web_env())
        self.worker = bench_worker(name, RESULTS / f"{name}-worker.log", concurrency=WORKER_CONCURRENCY)

    def start(self) -> None:
        for path in (self.web.access_log, self.web.log_path, self.worker.log_path):
            if path is not None:
                path.unlink(missing_ok=True)
        self.web.start()
        self.worker.start()

    @property
    def pids(self) -> tuple[int, int]:
        """(gunicorn master, Celery parent)."""
        return self.web.pid, self.worker.pid

    def check(self) -> None:
        self.worker.check()

    def stop(self) -> None:
        self.worker.stop(grace=10)
        self.web.stop()


def prepare_run() -> tuple[dict[str, str], dict[str, Any]]:
    """A fresh bench database (bench.ingest's), an empty Redis db, the user and its token."""
    pg = recreate_database()
    migrate()
    flush_bench_redis()
    return pg, run_setup(service_env())


def warm_up(
    url: str,
    tracker: Tracker,
    database_url: str,
    secret: str,
    count: int,
    *,
    rate: float = 20.0,
    check: Callable[[], None] = lambda: None,
) -> int:
    """`count` webhooks through the whole stack at `url` (both gunicorn workers, the pool
    children, the sync poller's first pages), waited for in SQL (calling `check` meanwhile, to
    fail early when a process died); the last warm-up ledger id."""
    sender = Sender(url, secret, tracker, threads=16, label=WARMUP)
    send_steady(sender, Bodies(first_serial=-1000).many(count), rate=rate, kind=WARMUP)
    sender.close()
    warm = [s for s in tracker.sent if s.kind == WARMUP]
    failed = [s.error for s in warm if s.raw_event_id is None]
    if failed:
        raise RuntimeError(f"{len(failed)} of {count} warm-up webhooks failed: {Counter(failed)}")
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        deadline = time.monotonic() + 60
        while wait_final(conn, 0, 1) and time.monotonic() < deadline:
            check()
        if wait_final(conn, 0, 0):
            raise TimeoutError("the warm-up events were not all processed in 60 s")
    return max(s.raw_event_id or 0 for s in warm)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["setup"]:
        print("usage: python -m bench.pipeline setup   (in a Django environment)", file=sys.stderr)
        return 2
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "amy.settings")
    import django

    django.setup()
    print("result " + json.dumps(setup_user()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
