"""Benchmark of normalization: events per second through one Celery worker process (run it with
`bench/run normalize`).

Workload: N ledger rows (default 3000), a daily, sleep, activity and body sample in turn
(tests/fixtures/terra), each a distinct body whose typed rows are all new (times shifted by whole
days, a new summary_id), inserted with raw_event_insert (state received) before anything is timed,
for one user with active Terra connections (bench/normalize_load.py prepare).

Worker: `celery -A amy worker -Q terra-events,amy -P prefork -c 1`, production settings (retries,
time limits, prefetch, max tasks per child), LOG_LEVEL=WARNING. It first processes a few warm-up
events (its readiness signal); then every nudge is published with ingest.publish.publish_raw_events
from a separate Django process, and the clock runs from the start of that publish until every
measured row is in a final state (polled every 50 ms).

Baseline, in the same run: a bare Python process (no Django, no Celery, one psycopg connection)
doing per event BEGIN, the writer's very upserts (built beforehand from the same pure parsers, as
ingest/services/typed_rows.py builds them), UPDATE raw_events ... processed, COMMIT. The typed
tables are truncated and the rows set back to received between the phases, so both insert.

The database amy_bench is dropped and recreated at the start; Redis database 14 is flushed. The
report goes to stdout and to bench/results/normalize.md; the goal line never fails the run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench.ingest import (
    CLOCK_TICKS,
    DATABASE_URL,
    DB_NAME,
    PYTHON,
    REDIS_DB,
    REDIS_URL,
    RESULTS,
    ROOT,
    _machine_busy_ticks,
    exit_cleanly_on_signals,
    fmt,
    git_revision,
    log,
    markdown_table,
    migrate,
    recreate_database,
    service_env,
    write_results,
)

BIN = Path(PYTHON).parent
TYPED_TABLES = ("daily_summary", "sleep_sessions", "activities", "body_measurements")
FINAL_STATES = ("processed", "skipped", "parked", "dead")
POLL_SECONDS = 0.05

GOAL_PER_SECOND = 300.0
GOAL_RATIO = 0.40
GOAL_TEXT = f"goal: >= {GOAL_PER_SECOND:g} events/s per worker process and >= {GOAL_RATIO:.0%} of the baseline"


# CPU accounting from /proc, with reaped children: the pool child is replaced every
# worker_max_tasks_per_child tasks and PostgreSQL backends exit with it, so a process alive at the
# first sample may be gone at the second; its time then shows in its parent's cutime/cstime.
# ------------------------------------------------------------------------------


def _process_table() -> dict[int, tuple[str, int, int, int]]:
    """pid -> (comm, ppid, own utime + stime, reaped children's cutime + cstime) in ticks."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = Path(entry.path, "stat").read_text()
            comm = raw[raw.index("(") + 1 : raw.rindex(")")]
            rest = raw[raw.rindex(")") + 2 :].split()
            table[int(entry.name)] = (comm, int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14]))
    return table


@dataclass
class CpuSnapshot:
    at: float
    processes: dict[int, tuple[str, int, int, int]]
    busy: int

    @classmethod
    def take(cls) -> CpuSnapshot:
        return cls(time.monotonic(), _process_table(), _machine_busy_ticks())


def cpu_usage(before: CpuSnapshot, after: CpuSnapshot, groups: dict[str, set[int]]) -> dict[str, float]:
    """Cores used on average between the snapshots: named groups of pids (with the children they
    reaped in between), then postgres, redis, everything else and the machine's total."""
    seconds = max(after.at - before.at, 1e-6)

    def used(pid: int) -> float:
        _, _, own, reaped = after.processes[pid]
        _, _, own_before, reaped_before = before.processes.get(pid, ("", 0, 0, 0))
        return (max(0, own - own_before) + max(0, reaped - reaped_before)) / CLOCK_TICKS / seconds

    result = dict.fromkeys([*groups, "postgres", "redis"], 0.0)
    for pid, (comm, ppid, _, _) in after.processes.items():
        named = [name for name, pids in groups.items() if pid in pids or ppid in pids]
        if named:
            result[named[0]] += used(pid)
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


def kill_group(process: subprocess.Popen[Any] | None, grace: float = 5.0) -> None:
    """Stop a process we started, by its own process group (never by name)."""
    if process is None or process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
            return


def read_line(process: subprocess.Popen[str], timeout: float, what: str) -> str:
    """The next stdout line of a helper, within `timeout` seconds."""
    import select

    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], timeout)
    if not readable:
        raise TimeoutError(f"no answer from {what} within {timeout:g} s")
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"{what} exited ({process.wait(timeout=10)})")
    return line.strip()


def send(process: subprocess.Popen[str], line: str) -> None:
    assert process.stdin is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()


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


def prepare(plan: Path, count: int, warmup: int) -> dict[str, Any]:
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


def worker_command(name: str) -> list[str]:
    return [
        str(BIN / "celery"),
        "-A",
        "amy",
        "worker",
        "-Q",
        "terra-events,amy",
        "-P",
        "prefork",
        "-c",
        "1",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "WARNING",
        "-n",
        f"{name}@%h",
    ]


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


def reset_for_baseline(conn: psycopg.Connection[Any], first_id: int) -> None:
    """Empty typed tables and the measured rows back to received, so that the baseline inserts."""
    conn.execute(f"TRUNCATE {', '.join(TYPED_TABLES)}")
    conn.execute(
        "UPDATE raw_events SET state = 'received', attempts = 0, processed_at = NULL, lease_until = NULL, "
        "process_error = NULL, user_id = NULL WHERE id >= %s",
        [first_id],
    )
    vacuum(conn)


def flush_redis() -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()


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

    @property
    def per_second(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0


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


def worker_phase(conn: psycopg.Connection[Any], plan: Path, timeout: float, extra_env: dict[str, str]) -> WorkerResult:
    data_ids = _plan_ids(plan)
    warmup_ids, ids = data_ids["warmup_ids"], data_ids["ids"]
    first_id, count = ids[0], len(ids)
    worker_log = RESULTS / "normalize-worker.log"
    worker_log.unlink(missing_ok=True)
    env = service_env()
    with worker_log.open("ab") as out:
        worker_env = {**env, **extra_env}
        worker = subprocess.Popen(
            worker_command(f"bench-normalize-{os.getpid()}"),
            cwd=ROOT,
            env=worker_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    publisher = helper("publish", plan, env=env)
    try:
        if read_line(publisher, 60, "the publisher") != "ready":
            raise RuntimeError("the publisher did not start")
        # Readiness: the worker has processed the warm-up events (a sample of each type).
        log(f"worker started (pid {worker.pid}); warm-up with {len(warmup_ids)} events")
        send(publisher, "warmup")
        read_line(publisher, 30, "the publisher")
        warm = wait_final(conn, warmup_ids, 60, worker)
        if warm < len(warmup_ids):
            raise TimeoutError(f"the worker processed {warm} of the warm-up events in 60 s; see {worker_log}")
        log(f"measured: {count} events, clock from the start of the publish to the last final state")
        groups = {"worker (celery parent + pool child)": {worker.pid}, "publisher": {publisher.pid}}
        sessions_before = pg_sessions(conn)
        before = CpuSnapshot.take()
        started = time.monotonic()
        send(publisher, "go")
        done = wait_final(conn, ids, timeout, worker)
        elapsed = time.monotonic() - started
        after = CpuSnapshot.take()
        sessions = pg_sessions(conn) - sessions_before
        # Rows can be final before every nudge is consumed (a batch takes rows ahead of their
        # messages, which then find them done): the worker is free only once the queue is empty.
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        try:
            drained = wait_drained(client, timeout, worker)
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
        kill_group(worker, grace=10)
    return WorkerResult(
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


def report(
    args: argparse.Namespace,
    pg: dict[str, str],
    prepared: dict[str, Any],
    work: WorkerResult,
    base: BaselineResult,
) -> str:
    base_rate = base.summary["per_second"] or 0.0
    ratio = work.per_second / base_rate if base_rate else None
    rate_ok = work.per_second >= GOAL_PER_SECOND
    ratio_ok = ratio is not None and ratio >= GOAL_RATIO
    all_processed = work.states.get("processed", 0) == work.events and work.done == work.events
    verdict = "MET" if rate_ok and ratio_ok and all_processed else "NOT MET"
    drained_text = (
        f"{work.drained_seconds:.2f} s after the start ({work.events / work.drained_seconds:.1f} messages/s)"
        if work.drained_seconds
        else "not within the timeout"
    )
    load = os.getloadavg()
    lines = [
        "# Normalize benchmark",
        "",
        (
            f"- run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC, commit {git_revision()}, "
            f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
        ),
        (
            f"- N = {work.events} events ({', '.join(f'{v} {k}' for k, v in prepared['types'].items())}), "
            f"distinct bodies (mean {prepared['mean_body_bytes']:.0f} B) from tests/fixtures/terra, one user, "
            f"{prepared['connections']} active Terra connections; {prepared['warmup_events']} warm-up events first"
        ),
        (
            "- worker: `celery -A amy worker -Q terra-events,amy -P prefork -c 1 --without-gossip "
            "--without-mingle --without-heartbeat`, production settings (prefetch 1, acks late, "
            "max 10,000 tasks per child), LOG_LEVEL=WARNING; nudges published with publish_raw_events "
            "from a separate process; time = from the start of the publish to the last row in a final "
            f"state (polled every {POLL_SECONDS * 1000:.0f} ms)"
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
        "",
        *markdown_table(
            ["phase", "events", "seconds", "events/s", "processed", "typed rows"],
            [
                [
                    "worker (1 process)",
                    str(work.events),
                    fmt(work.seconds, 2),
                    fmt(work.per_second),
                    str(work.states.get("processed", 0)),
                    str(sum(work.typed_rows.values())),
                ],
                [
                    "baseline (bare psycopg)",
                    str(base.summary["events"]),
                    fmt(base.summary["seconds"], 2),
                    fmt(base_rate),
                    str(base.states.get("processed", 0)),
                    str(sum(base.typed_rows.values())),
                ],
            ],
        ),
        "",
        (
            f"ratio worker / baseline: {fmt(None if ratio is None else 100 * ratio)} %; the publish of the "
            f"{work.events} nudges took {work.publish_seconds:.2f} s of the worker's window"
        ),
        "",
        (
            f"every nudge consumed and acked (terra-events and unacked empty) {drained_text}; deliveries "
            f"counted in raw_events.attempts: {work.deliveries} for {work.events} events"
        ),
        "",
        GOAL_TEXT,
        (
            f"-> {verdict}: {fmt(work.per_second)} events/s ({'ok' if rate_ok else 'short'}), "
            f"{fmt(None if ratio is None else 100 * ratio)} % of the baseline ({'ok' if ratio_ok else 'short'})"
            + ("" if all_processed else f"; NOT all processed: {work.states}")
        ),
        "",
        "Typed rows written per table (expected from the parsed payloads):",
        "",
        *markdown_table(
            ["table", "expected", "worker", "baseline"],
            [
                [t, str(prepared["expected_rows"].get(t, 0)), str(work.typed_rows[t]), str(base.typed_rows[t])]
                for t in TYPED_TABLES
            ],
        ),
        "",
        f"Final states after the worker phase: {work.states}",
        "",
        (
            f"PostgreSQL sessions opened during the worker's window (pg_stat_database.sessions): {work.sessions} "
            f"for {work.events} events"
        ),
    ]
    if work.errors:
        lines += ["", "Not processed (first 5):", *(f"- {e}" for e in work.errors)]
    cpu_groups = ["worker (celery parent + pool child)", "publisher", "baseline process", "postgres", "redis"]
    cpu_groups += ["everything else", "machine total"]
    rows = []
    for name, cpu, rate in (("worker", work.cpu, work.per_second), ("baseline", base.cpu, base_rate)):
        rows.append(
            [
                name,
                *(fmt(cpu.get(g), 2) if g in cpu else "-" for g in cpu_groups),
                fmt(1000 * cpu["machine total"] / max(rate, 1e-9), 2),
            ]
        )
    lines += [
        "",
        (
            f"CPU during the measured window, in cores (this machine has {os.cpu_count()}); "
            "core-ms per event = machine total / events per second:"
        ),
        "",
        *markdown_table(["phase", *cpu_groups, "core-ms per event"], rows),
    ]
    return "\n".join(lines) + "\n"


# Main
# ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000, help="measured events (default 3000)")
    parser.add_argument("--warmup-events", type=int, default=8, help="processed before the clock (default 8)")
    parser.add_argument("--timeout", type=float, default=90.0, help="bound on the worker phase (default 90 s)")
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

    log(f"database {DB_NAME}: drop, create, migrate; Redis db {REDIS_DB}: flush")
    pg = recreate_database()
    migrate()
    flush_redis()
    with tempfile.TemporaryDirectory(prefix="amy-bench-normalize-") as tmp:
        plan = Path(tmp) / "plan.pickle"
        log(f"{args.warmup_events} warm-up + {args.events} events into raw_events; parse them for the baseline")
        prepared = prepare(plan, args.events, args.warmup_events)
        log(f"  prepared in {prepared['seconds']:.1f} s: {prepared['types']}, rows {prepared['expected_rows']}")
        first_id = _plan_ids(plan)["ids"][0]
        with psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
            try:
                vacuum(conn)
                work = worker_phase(conn, plan, args.timeout, extra_env)
                log(f"  worker: {work.done}/{work.events} final in {work.seconds:.2f} s = {work.per_second:.1f}/s")
                reset_for_baseline(conn, first_id)
                log("baseline: bare psycopg loop over the same events")
                base = baseline_phase(conn, plan, first_id)
                log(f"  baseline: {base.summary['per_second']:.1f}/s")
            finally:
                with contextlib.suppress(redis.RedisError):
                    flush_redis()

    text = report(args, pg, prepared, work, base)
    write_results("normalize", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
