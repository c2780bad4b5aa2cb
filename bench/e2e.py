"""End-to-end benchmark (run it with `bench/run e2e`): a signed webhook to its typed row visible in
`GET /v1/sync`, at a steady rate.

Stack: gunicorn (amy.wsgi, 2 sync workers) and one Celery worker (`-c 2`, production settings:
acks late, prefetch 1, max tasks per child), both on the fresh bench database, LOG_LEVEL=WARNING
(bench/pipeline.py BenchStack). One user with four active Terra connections and a CLI token.

Client (this process, bench/pipeline.py): distinct signed webhooks (daily, sleep, activity and
body samples in turn, every one a new ledger row with new typed rows) sent open-loop at `--rate`
per second for `--seconds` (each at its scheduled time, whatever the earlier ones are doing);
a poller doing what the CLI does (`/v1/sync` from no cursor, following `cursor` while
`has_more`, a new round every `--interval` seconds). An event's latency runs from its scheduled
send to the arrival of the first sync page holding one of its typed rows (they carry its
raw_event_id). A webhook never seen in sync within `--drain` seconds after the last send counts
as missing.

Baseline, in the same run and on the same clock: a second poller asking PostgreSQL directly
(every `--interval` seconds, which answered events have typed rows): webhook to typed row
committed, i.e. the pipeline without the API's read path. Its p99 beside the sync's gives the
read path's share (the sync serves only rows below the cluster's oldest running transaction, see
ingest/sync.py, and the CLI polls). Also shown: the webhook's own answer time and the ledger's
received_at -> processed_at (the database's clock, no polling granularity): the floor of the
pipeline. Both pollers wait up to one interval (mean half of it) before they see a row.

The database is bench.ingest's (dropped and recreated); Redis db bench.ingest's (flushed). The
report goes to stdout and to bench/results/e2e.md; the goal line never fails the run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import sys
from typing import Any

import psycopg
import redis

from bench.common import (
    DATABASE_URL,
    DB_NAME,
    REDIS_DB,
    RESULTS,
    SECRET,
    WEB_WORKERS,
    exit_cleanly_on_signals,
    flush_bench_redis,
    fmt,
    git_revision,
    log,
    markdown_table,
    percentile,
    write_results,
)
from bench.normalize import CpuSnapshot, cpu_usage
from bench.pipeline import (
    WORKER_CONCURRENCY,
    Accounting,
    BenchStack,
    Bodies,
    DbPoller,
    Latency,
    Sender,
    SyncPoller,
    Tracker,
    account,
    between,
    ledger_latency,
    prepare_run,
    send_steady,
    wait_final,
    wait_visible,
    warm_up,
)

GOAL_RATE = 100.0
GOAL_P99_MS = 2000.0
GOAL_TEXT = f"goal: webhook -> typed row in /v1/sync p99 <= {GOAL_P99_MS / 1000:g} s at {GOAL_RATE:g} events/s"


def latency_row(name: str, latency: Latency) -> list[str]:
    return [
        name,
        str(latency.count),
        fmt(latency.p50, 1),
        fmt(latency.p95, 1),
        fmt(latency.p99, 1),
        fmt(latency.max, 1),
        str(latency.missing),
    ]


LATENCY_HEADER = ["from the scheduled send to", "events", "p50 ms", "p95 ms", "p99 ms", "max ms", "missing"]


def goal_lines(rate: float, sync: Latency, books: Accounting) -> list[str]:
    p99_ok = sync.p99 is not None and sync.p99 <= GOAL_P99_MS
    rate_ok = rate >= 0.98 * GOAL_RATE
    complete = sync.missing == 0 and books.balanced
    verdict = "MET" if p99_ok and rate_ok and complete else "NOT MET"
    notes = [] if rate_ok else [f"sent at {rate:.1f}/s only"]
    if sync.missing:
        notes.append(f"{sync.missing} never seen in sync")
    if not books.balanced:
        notes.append(f"books not balanced (lost {books.lost}, duplicated typed rows {books.typed_duplicated})")
    return [
        GOAL_TEXT,
        f"-> {verdict}: p99 {fmt(sync.p99, 1)} ms ({'ok' if p99_ok else 'over'}) at {rate:.1f} events/s sent"
        + (f"; {'; '.join(notes)}" if notes else ""),
    ]


def report(args: argparse.Namespace, pg: dict[str, str], figures: dict[str, Any]) -> str:
    load = os.getloadavg()
    sync, db = figures["sync"], figures["db"]
    ratio = sync.p99 / db.p99 if sync.p99 and db.p99 else None
    lines = [
        "# End-to-end: signed webhook to typed row in /v1/sync",
        "",
        (
            f"- run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC, commit {git_revision()}, "
            f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
        ),
        (
            f"- load: {figures['events']} distinct signed webhooks (daily, sleep, activity, body in turn) sent "
            f"open-loop at {args.rate:g}/s for {args.seconds:g} s (achieved {figures['rate']:.1f}/s; sender lag "
            f"p99 {fmt(figures['lag_p99'], 1)} ms, max {fmt(figures['lag_max'], 1)} ms), after "
            f"{args.warmup_events} warm-up webhooks; latencies count from each webhook's scheduled send"
        ),
        (
            f"- stack: gunicorn amy.wsgi ({WEB_WORKERS} sync workers) + `celery worker -c {WORKER_CONCURRENCY}` "
            "(prefork, production settings: acks late, prefetch 1, max 10,000 tasks per child), LOG_LEVEL=WARNING; "
            "one user, 4 active Terra connections, a CLI token"
        ),
        (
            f"- sync poller: `/v1/sync?limit=5000` from no cursor, following cursors, a round every "
            f"{1000 * args.interval:g} ms ({figures['sync_requests']} requests, p50 "
            f"{fmt(figures['sync_request_p50'], 1)} ms each, errors: {figures['sync_errors'] or 0}); the sync serves "
            "rows below the cluster's oldest running transaction: the longest one seen open during the run was "
            f"{figures['oldest'][0]:.1f} s old (database {figures['oldest'][1]})"
        ),
        (
            f"- baseline (same run, same clock): a poller asking PostgreSQL every {1000 * args.interval:g} ms "
            "which answered events have typed rows (the pipeline without the API's read path); also the "
            "webhook's answer time and the ledger's received_at -> processed_at (database clock, no polling)"
        ),
        (
            f"- PostgreSQL {pg.get('server_version')} (fsync={pg.get('fsync')}, synchronous_commit="
            f"{pg.get('synchronous_commit')}), database {DB_NAME}; Redis db {REDIS_DB}"
        ),
        "",
        *markdown_table(
            LATENCY_HEADER,
            [
                latency_row("typed row in /v1/sync (the CLI's view)", sync),
                latency_row("typed row in PostgreSQL (SQL poll; baseline)", db),
                latency_row("the webhook's 200 answer", figures["answer"]),
            ],
        ),
        "",
        *markdown_table(
            ["between", "events", "p50 ms", "p95 ms", "p99 ms", "max ms", "missing"],
            [
                latency_row("typed row in PostgreSQL -> in /v1/sync", figures["read_path"]),
                latency_row("ledger received_at -> processed_at (database clock)", figures["ledger"]),
            ],
        ),
        "",
        (
            f"ratio sync p99 / SQL p99: {fmt(ratio, 2)} (the read path adds "
            f"{fmt(None if ratio is None else sync.p99 - db.p99, 1)} ms at p99)"
        ),
        "",
        *goal_lines(figures["rate"], sync, figures["books"]),
        "",
        "Accounting (SQL, after the run):",
        "",
        *figures["books"].lines(),
    ]
    cpu = figures["cpu"]
    groups = [g for g in cpu if g != "machine total"] + ["machine total"]
    lines += [
        "",
        f"CPU while sending, in cores (this machine has {os.cpu_count()}):",
        "",
        *markdown_table(groups, [[fmt(cpu[g], 2) for g in groups]]),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=GOAL_RATE, help="webhooks per second (default 100)")
    parser.add_argument("--seconds", type=float, default=30.0, help="sending time (default 30)")
    parser.add_argument("--interval", type=float, default=0.05, help="poll interval, seconds (default 0.05)")
    parser.add_argument("--warmup-events", type=int, default=40, help="warm-up webhooks (default 40)")
    parser.add_argument("--drain", type=float, default=60.0, help="wait for the last rows, seconds (default 60)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.warmup_events < 1:
        parser.error("--rate, --seconds and --warmup-events must be positive")
    exit_cleanly_on_signals()
    RESULTS.mkdir(parents=True, exist_ok=True)

    log(f"database {DB_NAME}: drop, create, migrate; Redis db {REDIS_DB}: flush; a user and a CLI token")
    pg, setup = prepare_run()
    count = round(args.rate * args.seconds)
    bodies = Bodies().many(count)
    tracker = Tracker()
    stack = BenchStack("e2e")
    pollers: list[Any] = []
    try:
        stack.start()
        log(
            f"gunicorn on {stack.web.url}, celery worker -c {WORKER_CONCURRENCY}; {args.warmup_events} warm-up webhooks"
        )
        sync = SyncPoller(stack.web.url, setup["token"], tracker, interval=args.interval)
        db = DbPoller(DATABASE_URL, tracker, interval=args.interval)
        pollers = [sync, db]
        for poller in pollers:
            poller.start()
        after_id = warm_up(stack.web.url, tracker, DATABASE_URL, SECRET, args.warmup_events, check=stack.check)
        wait_visible(tracker, 30)  # the warm-up's rows, so the poller's cursor is at the end
        sync.requests, sync.request_seconds = 0, []
        log(f"sending {count} webhooks at {args.rate:g}/s (open loop)")
        sender = Sender(stack.web.url, SECRET, tracker, threads=64, label="e2e")
        gunicorn_pid, celery_pid = stack.pids
        before = CpuSnapshot.take()
        rate = send_steady(sender, bodies, rate=args.rate)
        after = CpuSnapshot.take()
        sender.close()
        log(f"  sent at {rate:.1f}/s; waiting up to {args.drain:g} s for every row in /v1/sync")
        missing = wait_visible(tracker, args.drain)
        stack.check()
        for poller in pollers:
            poller.stop()
        log(f"  {missing} not seen in sync")
        with psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
            wait_final(conn, after_id, 10)
            answered = tracker.answered()
            books = account(conn, tracker, after_id=after_id, rows_per_type=setup["rows_per_type"])
            ledger = ledger_latency(conn, [s.raw_event_id for s in answered if s.raw_event_id])
    finally:
        for poller in pollers:
            poller.stop()
        stack.stop()
        with contextlib.suppress(redis.RedisError):
            flush_bench_redis()

    measured = tracker.measured()
    lags = sorted(1000 * (s.started - s.scheduled) for s in measured if s.started)
    figures = {
        "events": count,
        "rate": rate,
        "lag_p99": percentile(lags, 99),
        "lag_max": lags[-1] if lags else None,
        "sync": Latency.of(answered, tracker.in_sync),
        "db": Latency.of(answered, tracker.in_db),
        "answer": Latency.of(answered, answer=True),
        "read_path": between(tracker.in_db, tracker.in_sync, answered),
        "ledger": ledger,
        "books": books,
        "sync_requests": sync.requests,
        "sync_request_p50": percentile(sorted(1000 * s for s in sync.request_seconds), 50),
        "sync_errors": dict(sync.errors),
        "oldest": db.oldest_transaction,
        "cpu": cpu_usage(
            before,
            after,
            {"gunicorn (master + workers)": {gunicorn_pid}, "celery worker": {celery_pid}, "client": {os.getpid()}},
        ),
    }
    text = report(args, pg, figures)
    write_results("e2e", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
