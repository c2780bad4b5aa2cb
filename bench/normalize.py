"""Benchmark of normalization: events per second through Celery worker processes, on two backlogs
(run it with `bench/run normalize`).

Backlogs (N events each, default 6000, daily, sleep, activity and body samples in turn from
tests/fixtures/terra, stored with raw_event_insert before anything is timed; bench/normalize_load.py):
- distinct: 200 users, each user-day updated twice (two versions, newest last by Terra's ordering
  timestamp), every body event measuring at times of its own;
- colliding: 20 users, each user-day updated four times, the body versions of a day measuring at
  the same times: the same rows are updated by several events in flight at once.

Workers: `celery -A amy worker -Q terra-events,amy -P prefork -c C` for C = 1 and 2, production
settings, LOG_LEVEL=WARNING. Each phase first processes a few warm-up events (its readiness
signal); then every measured row is nudged once through the webhook's own publish path (coalesced)
from a separate Django process. events/s: from the ledger's own processed_at, first to last (a
worker takes the whole backlog from the warm-up's nudge on: rows carry their own work). Deadlocks: PostgreSQL's
pg_stat_database.deadlocks for the database, before the worker starts and after it stopped.

Baseline, in the same run, per backlog: a bare Python process (no Django, no Celery, one psycopg
connection) doing per event BEGIN, the writer's upserts (built beforehand from the same pure
parsers, event by event), UPDATE raw_events ... processed, COMMIT. The typed tables are truncated
and the rows set back to received between phases, so every phase inserts.

The database amy_bench is dropped and recreated for each backlog; Redis database 14 is flushed.
The report goes to stdout and to bench/results/normalize.md; the goal line never fails the run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench.common import (
    CLOCK_TICKS,
    DATABASE_URL,
    DB_NAME,
    PYTHON,
    REDIS_DB,
    REDIS_URL,
    RESULTS,
    ROOT,
    CpuSnapshot,
    bench_worker,
    exit_cleanly_on_signals,
    flush_bench_redis,
    fmt,
    git_revision,
    log,
    markdown_table,
    migrate,
    read_line,
    recreate_database,
    send,
    service_env,
    write_results,
)
from harness.processes import kill_group

BIN = Path(PYTHON).parent
TYPED_TABLES = ("daily_summary", "sleep_sessions", "activities", "body_measurements")
FINAL_STATES = ("processed", "skipped", "parked", "dead")
POLL_SECONDS = 0.05

GOAL_PER_SECOND = 800.0
GOAL_TEXT = f"one process >= {GOAL_PER_SECOND:g} events/s; two processes never slower than one; 0 deadlocks"
WORKER_GROUP = "worker (celery parent + pool children)"
BACKLOGS = {
    "distinct": {"users": 200, "updates": 2, "shared_body_times": False},
    "colliding": {"users": 20, "updates": 4, "shared_body_times": True},
}
BACKLOG_TEXT = {
    "distinct": "200 users, each day updated twice, distinct body times",
    "colliding": "20 users, 4 updates per user-day, body events on the same rows",
}
CONCURRENCIES = (1, 2)


# CPU accounting from /proc, with reaped children: the pool child is replaced every
# worker_max_tasks_per_child tasks and PostgreSQL backends exit with it, so a process alive at the
# first sample may be gone at the second; its time then shows in its parent's cutime/cstime.
# ------------------------------------------------------------------------------


def cpu_usage(before: CpuSnapshot, after: CpuSnapshot, groups: dict[str, set[int]]) -> dict[str, float]:
    """Cores used on average between the snapshots: named groups of pids (with the children they
    reaped in between), then postgres, redis, everything else and the machine's total."""
    seconds = max(after.at - before.at, 1e-6)

    def used(pid: int) -> float:
        _, _, own, reaped = after.processes[pid]
        _, _, own_before, reaped_before = before.processes.get(pid, ("", 0, 0, 0))
        return (max(0, own - own_before) + max(0, reaped - reaped_before)) / CLOCK_TICKS / seconds

    own_postgres = f"postgres ({DB_NAME})"
    result = dict.fromkeys([*groups, own_postgres, "postgres", "redis"], 0.0)
    for pid, (comm, ppid, _, _) in after.processes.items():
        named = [name for name, pids in groups.items() if pid in pids or ppid in pids]
        if named:
            result[named[0]] += used(pid)
        elif comm == own_postgres:
            result[own_postgres] += used(pid)
        elif comm.startswith("postgres"):
            result["postgres"] += used(pid)
        elif comm.startswith("redis-server"):
            result["redis"] += used(pid)
    machine = max(0, after.busy - before.busy) / CLOCK_TICKS / seconds
    result["everything else"] = max(0.0, machine - sum(result.values()))
    result["machine total"] = machine
    return result


# Processes
# ------------------------------------------------------------------------------


def helper(mode: str, plan: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-m", "bench.normalize_load", mode, "--plan", str(plan), *extra],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def prepare(plan: Path, count: int, warmup: int, backlog: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run(
        [
            PYTHON,
            "-m",
            "bench.normalize_load",
            "prepare",
            "--plan",
            str(plan),
            *("--count", str(count)),
            *("--warmup", str(warmup)),
            *("--users", str(backlog["users"])),
            *("--updates", str(backlog["updates"])),
            *(["--shared-body-times"] if backlog["shared_body_times"] else []),
        ],
        cwd=ROOT,
        env=service_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("result ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"prepare failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return json.loads(lines[-1].removeprefix("result "))


# Database helpers (the benchmark's own connection, autocommit)
# ------------------------------------------------------------------------------


def final_count(conn: psycopg.Connection[Any], ids: list[int]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM raw_events WHERE id BETWEEN %s AND %s AND state = ANY(%s)",
        [min(ids), max(ids), list(FINAL_STATES)],
    ).fetchone()
    return row[0] if row else 0


def states(conn: psycopg.Connection[Any], first_id: int) -> dict[str, int]:
    rows = conn.execute(
        "SELECT state, count(*) FROM raw_events WHERE id >= %s GROUP BY state ORDER BY state", [first_id]
    ).fetchall()
    return dict(rows)


def typed_rows(conn: psycopg.Connection[Any], first_id: int) -> dict[str, int]:
    counts = {}
    for table in TYPED_TABLES:
        row = conn.execute(f"SELECT count(*) FROM {table} WHERE raw_event_id >= %s", [first_id]).fetchone()
        counts[table] = row[0] if row else 0
    return counts


def errors_sample(conn: psycopg.Connection[Any], first_id: int) -> list[str]:
    rows = conn.execute(
        "SELECT id, state, process_error FROM raw_events WHERE id >= %s AND state <> 'processed' ORDER BY id LIMIT 5",
        [first_id],
    ).fetchall()
    return [f"raw_event {i}: {s} {e or ''}".strip() for i, s, e in rows]


def pg_sessions(conn: psycopg.Connection[Any]) -> int:
    """Sessions PostgreSQL has counted for this database (pg_stat_database.sessions)."""
    row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def vacuum(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"VACUUM (ANALYZE) raw_events, terra_connections, {', '.join(TYPED_TABLES)}")


def reset_rows(conn: psycopg.Connection[Any]) -> None:
    """Empty typed tables and every row back to received, so that the next phase inserts."""
    conn.execute(f"TRUNCATE {', '.join(TYPED_TABLES)}")
    conn.execute(
        "UPDATE raw_events SET state = 'received', attempts = 0, retries = 0, processed_at = NULL, "
        "lease_until = NULL, process_error = NULL, user_id = NULL"
    )
    vacuum(conn)


def deadlocks(conn: psycopg.Connection[Any]) -> int:
    """Deadlocks PostgreSQL counted in this database, once the counts of ended sessions are in."""
    last = -1
    for _ in range(20):
        row = conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()
        value = int(row[0]) if row and row[0] is not None else 0
        if value == last:
            return value
        last = value
        time.sleep(0.25)
    return last


def processed_span(conn: psycopg.Connection[Any], first_id: int) -> float:
    """Seconds from the first measured row's processed_at to the last's (the ledger's own times)."""
    row = conn.execute(
        "SELECT extract(epoch FROM max(processed_at) - min(processed_at)) FROM raw_events WHERE id >= %s",
        [first_id],
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


# Phases
# ------------------------------------------------------------------------------


@dataclass
class WorkerResult:
    events: int
    seconds: float
    done: int
    publish_seconds: float
    states: dict[str, int]
    typed_rows: dict[str, int]
    sessions: int
    drained_seconds: float | None = None
    deliveries: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    concurrency: int = 1
    span: float = 0.0
    deadlocks: int = 0

    @property
    def per_second(self) -> float:
        """From the ledger's own processed_at, first to last."""
        return self.done / self.span if self.span else 0.0


def queue_empty(client: redis.Redis) -> bool:
    """Every nudge consumed and acked: nothing queued on terra-events, nothing unacked."""
    return client.llen("terra-events") == 0 and client.hlen("unacked") == 0


def wait_drained(client: redis.Redis, timeout: float, worker: Any) -> bool:
    deadline = time.monotonic() + timeout
    while not queue_empty(client):
        if worker.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS / 5)
    return True


def deliveries(conn: psycopg.Connection[Any], first_id: int) -> int:
    row = conn.execute("SELECT coalesce(sum(attempts), 0) FROM raw_events WHERE id >= %s", [first_id]).fetchone()
    return int(row[0]) if row else 0


def wait_final(conn: psycopg.Connection[Any], ids: list[int], timeout: float, worker: Any) -> int:
    """How many of `ids` (consecutive) are final, polled until all are or `timeout` runs out."""
    deadline = time.monotonic() + timeout
    done = final_count(conn, ids)
    while done < len(ids) and time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited ({worker.returncode}); see {RESULTS / 'normalize-worker.log'}")
        time.sleep(POLL_SECONDS)
        done = final_count(conn, ids)
    return done


def worker_phase(
    conn: psycopg.Connection[Any], plan: Path, timeout: float, extra_env: dict[str, str], concurrency: int
) -> WorkerResult:
    data_ids = _plan_ids(plan)
    warmup_ids, ids = data_ids["warmup_ids"], data_ids["ids"]
    first_id, count = ids[0], len(ids)
    worker_log = RESULTS / "normalize-worker.log"
    worker_log.unlink(missing_ok=True)
    env = service_env()
    worker = bench_worker(f"normalize-{os.getpid()}", worker_log, concurrency=concurrency, env={**env, **extra_env})
    worker.start()
    publisher = helper("publish", plan, env=env)
    try:
        if read_line(publisher, 60, "the publisher") != "ready":
            raise RuntimeError("the publisher did not start")
        # Readiness: the worker has processed the warm-up events (a sample of each type).
        log(f"worker started (pid {worker.pid}); warm-up with {len(warmup_ids)} events")
        send(publisher, "warmup")
        read_line(publisher, 30, "the publisher")
        warm = wait_final(conn, warmup_ids, 60, worker.process)
        if warm < len(warmup_ids):
            raise TimeoutError(f"the worker processed {warm} of the warm-up events in 60 s; see {worker_log}")
        log(f"measured: {count} events, clock from the start of the publish to the last final state")
        groups = {WORKER_GROUP: {worker.pid}, "publisher": {publisher.pid}}
        sessions_before = pg_sessions(conn)
        deadlocks_before = deadlocks(conn)
        before = CpuSnapshot.take()
        started = time.monotonic()
        send(publisher, "go")
        done = wait_final(conn, ids, timeout, worker.process)
        elapsed = time.monotonic() - started
        after = CpuSnapshot.take()
        sessions = pg_sessions(conn) - sessions_before
        # Rows can be final before every nudge is consumed (a batch takes rows ahead of their
        # messages, which then find them done): the worker is free only once the queue is empty.
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        try:
            drained = wait_drained(client, timeout, worker.process)
            drained_seconds = time.monotonic() - started if drained else None
        finally:
            client.close()
        answer = read_line(publisher, 30, "the publisher").split()
        if answer[:2] != ["published", str(count)]:
            raise RuntimeError(f"the publisher answered {answer!r}, expected 'published {count} <seconds>'")
        publish_seconds = float(answer[2])
        send(publisher, "quit")
    finally:
        kill_group(publisher, grace=2)
        worker.stop(grace=10)
    return WorkerResult(
        concurrency=concurrency,
        span=processed_span(conn, first_id),
        deadlocks=deadlocks(conn) - deadlocks_before,
        events=count,
        seconds=elapsed,
        done=done,
        publish_seconds=publish_seconds,
        states=states(conn, first_id),
        typed_rows=typed_rows(conn, first_id),
        sessions=sessions,
        drained_seconds=drained_seconds,
        deliveries=deliveries(conn, first_id),
        cpu=cpu_usage(before, after, groups),
        errors=errors_sample(conn, first_id),
    )


def _plan_ids(plan: Path) -> dict[str, list[int]]:
    import pickle

    data = pickle.loads(plan.read_bytes())  # noqa: S301 - our own file, written by prepare
    return {"warmup_ids": data["warmup_ids"], "ids": data["ids"]}


@dataclass
class BaselineResult:
    summary: dict[str, Any]
    states: dict[str, int]
    typed_rows: dict[str, int]
    cpu: dict[str, float] = field(default_factory=dict)


def baseline_phase(conn: psycopg.Connection[Any], plan: Path, first_id: int) -> BaselineResult:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_"))}
    process = helper("baseline", plan, "--database-url", DATABASE_URL, env=env)
    try:
        if read_line(process, 60, "the baseline") != "start":
            raise RuntimeError("the baseline did not start")
        before = CpuSnapshot.take()
        if read_line(process, 120, "the baseline") != "end":
            raise RuntimeError("the baseline did not finish")
        after = CpuSnapshot.take()
        send(process, "sampled")
        summary = json.loads(read_line(process, 30, "the baseline").removeprefix("result "))
        process.wait(timeout=10)
    finally:
        kill_group(process, grace=2)
    return BaselineResult(
        summary=summary,
        states=states(conn, first_id),
        typed_rows=typed_rows(conn, first_id),
        cpu=cpu_usage(before, after, {"baseline process": {process.pid}}),
    )


# Report
# ------------------------------------------------------------------------------


@dataclass
class BacklogResult:
    name: str
    prepared: dict[str, Any]
    workers: list[WorkerResult]
    base: BaselineResult


def _cpu(cpu: dict[str, float], group: str) -> str:
    return fmt(cpu.get(group), 2)


def _own_cpu(cpu: dict[str, float], group: str) -> float:
    """Cores used by the phase's own processes: the worker (or baseline) and its database's backends."""
    return cpu.get(group, 0.0) + cpu.get(f"postgres ({DB_NAME})", 0.0)


def report(args: argparse.Namespace, pg: dict[str, str], results: list[BacklogResult]) -> str:
    load = os.getloadavg()
    rows = []
    for result in results:
        base_rate = result.base.summary["per_second"] or 0.0
        for work in result.workers:
            rows.append(
                [
                    BACKLOG_TEXT[result.name],
                    f"worker -c {work.concurrency}",
                    str(work.events),
                    fmt(work.span, 2),
                    fmt(work.per_second),
                    str(work.deadlocks),
                    str(work.states.get("processed", 0)),
                    f"{work.deliveries}",
                    _cpu(work.cpu, WORKER_GROUP),
                    _cpu(work.cpu, f"postgres ({DB_NAME})"),
                    _cpu(work.cpu, "postgres"),
                    _cpu(work.cpu, "machine total"),
                    fmt(1000 * _own_cpu(work.cpu, WORKER_GROUP) / max(work.per_second, 1e-9), 2),
                ]
            )
        rows.append(
            [
                BACKLOG_TEXT[result.name],
                "baseline (bare psycopg, 1 process)",
                str(result.base.summary["events"]),
                fmt(result.base.summary["seconds"], 2),
                fmt(base_rate),
                "-",
                str(result.base.states.get("processed", 0)),
                "-",
                _cpu(result.base.cpu, "baseline process"),
                _cpu(result.base.cpu, f"postgres ({DB_NAME})"),
                _cpu(result.base.cpu, "postgres"),
                _cpu(result.base.cpu, "machine total"),
                fmt(1000 * _own_cpu(result.base.cpu, "baseline process") / max(base_rate, 1e-9), 2),
            ]
        )
    verdicts = []
    for result in results:
        one, two = (next(w for w in result.workers if w.concurrency == c) for c in CONCURRENCIES)
        all_processed = all(w.states.get("processed", 0) == w.events == w.done for w in result.workers)
        met = (
            one.per_second >= GOAL_PER_SECOND
            and two.per_second >= one.per_second
            and all(w.deadlocks == 0 for w in result.workers)
            and all_processed
        )
        verdicts += [
            f"goal ({result.name} backlog, {BACKLOG_TEXT[result.name]}): {GOAL_TEXT}",
            f"-> {'MET' if met else 'NOT MET'}: -c 1 {fmt(one.per_second)} events/s, -c 2 {fmt(two.per_second)} "
            f"events/s ({fmt(100 * two.per_second / max(one.per_second, 1e-9))} % of -c 1), deadlocks "
            f"{one.deadlocks} and {two.deadlocks}"
            + ("" if all_processed else f"; NOT all processed: {[w.states for w in result.workers]}"),
            "",
        ]
    typed = []
    for result in results:
        for work in result.workers:
            typed.append(
                [
                    result.name,
                    f"worker -c {work.concurrency}",
                    *(str(work.typed_rows[t]) for t in TYPED_TABLES),
                ]
            )
        typed.append([result.name, "baseline", *(str(result.base.typed_rows[t]) for t in TYPED_TABLES)])
    lines = [
        "# Normalize benchmark",
        "",
        (
            f"- run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC, commit {git_revision()}, "
            f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
        ),
        (
            f"- {args.events} measured events per backlog (a daily, sleep, activity and body sample in turn, "
            f"distinct bodies from tests/fixtures/terra); {args.warmup_events} warm-up events first in each phase"
        ),
        (
            "- workers: `celery -A amy worker -Q terra-events,amy -P prefork -c C --without-gossip "
            "--without-mingle --without-heartbeat`, production settings, LOG_LEVEL=WARNING; every row nudged "
            "once through the webhook's publish path (coalesced while a nudge waits), from a separate process"
        ),
        (
            "- seconds and events/s: from the ledger's processed_at, first row to last (a worker takes the "
            "backlog as soon as its first nudge arrives: the warm-up's)"
        ),
        *([f"- worker environment overrides: {', '.join(args.worker_env)}"] if args.worker_env else []),
        (
            "- baseline: one bare process, one psycopg connection (client-side binding, as Django), per "
            "event BEGIN, the writer's upserts (built beforehand from the same parsers), UPDATE raw_events "
            "... processed, COMMIT"
        ),
        (
            f"- PostgreSQL {pg.get('server_version')} (fsync={pg.get('fsync')}, "
            f"synchronous_commit={pg.get('synchronous_commit')}), database {DB_NAME}; Redis db {REDIS_DB}; typed "
            "tables truncated and rows set back to received (then VACUUM ANALYZE) between the phases"
        ),
        (
            f"- CPU in cores (machine: {os.cpu_count()} CPUs), averaged over the measured window: the worker (its "
            f"pool children included), PostgreSQL's backends serving {DB_NAME}, the rest of PostgreSQL (other "
            "engineers' databases and the server's own processes), the machine; core-ms per event = (worker + "
            f"postgres {DB_NAME}) / events per second"
        ),
        "",
        *markdown_table(
            [
                "backlog",
                "phase",
                "events",
                "seconds",
                "events/s",
                "deadlocks",
                "processed",
                "deliveries",
                "worker or baseline CPU",
                f"postgres CPU ({DB_NAME})",
                "other postgres CPU",
                "machine CPU",
                "core-ms/event",
            ],
            rows,
        ),
        "",
        *verdicts,
        "Typed rows after each phase (the same in every phase of a backlog):",
        "",
        *markdown_table(["backlog", "phase", *TYPED_TABLES], typed),
    ]
    errors = [e for result in results for w in result.workers for e in w.errors]
    if errors:
        lines += ["", "Not processed (first 5 of each phase):", *(f"- {e}" for e in errors)]
    return "\n".join(lines) + "\n"


# Main
# ------------------------------------------------------------------------------


def run_backlog(name: str, args: argparse.Namespace, extra_env: dict[str, str]) -> tuple[dict[str, str], BacklogResult]:
    log(f"backlog {name}: database {DB_NAME}: drop, create, migrate; Redis db {REDIS_DB}: flush")
    pg = recreate_database()
    migrate()
    flush_bench_redis()
    with tempfile.TemporaryDirectory(prefix="amy-bench-normalize-") as tmp:
        plan = Path(tmp) / "plan.pickle"
        log(f"{args.warmup_events} warm-up + {args.events} events into raw_events; parse them for the baseline")
        prepared = prepare(plan, args.events, args.warmup_events, BACKLOGS[name])
        log(f"  prepared in {prepared['seconds']:.1f} s: {prepared['types']}")
        first_id = _plan_ids(plan)["ids"][0]
        workers = []
        with psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
            try:
                vacuum(conn)
                for concurrency in CONCURRENCIES:
                    work = worker_phase(conn, plan, args.timeout, extra_env, concurrency)
                    log(
                        f"  worker -c {concurrency}: {work.done}/{work.events} final, {work.per_second:.1f}/s, "
                        f"deadlocks {work.deadlocks}"
                    )
                    workers.append(work)
                    reset_rows(conn)
                    flush_bench_redis()
                log("baseline: bare psycopg loop over the same events")
                base = baseline_phase(conn, plan, first_id)
                log(f"  baseline: {base.summary['per_second']:.1f}/s")
            finally:
                with contextlib.suppress(redis.RedisError):
                    flush_bench_redis()
    return pg, BacklogResult(name, prepared, workers, base)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=6000, help="measured events per backlog (default 6000)")
    parser.add_argument("--warmup-events", type=int, default=8, help="processed before the clock (default 8)")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound on each worker phase (default 120 s)")
    parser.add_argument(
        "--backlog", action="append", choices=sorted(BACKLOGS), help="run only this backlog (repeatable)"
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the worker only, to try a setting (repeatable); shown in the report",
    )
    args = parser.parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.worker_env)
    if args.events < 1 or args.warmup_events < 1:
        parser.error("--events and --warmup-events must be positive")
    exit_cleanly_on_signals()
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = []
    pg: dict[str, str] = {}
    for name in args.backlog or list(BACKLOGS):
        pg, result = run_backlog(name, args, extra_env)
        results.append(result)
    text = report(args, pg, results)
    write_results("normalize", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
