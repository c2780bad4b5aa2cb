"""Soak (run it with `bench/run soak`; `--seconds 60` for a quick one): a bounded load run with the
books balanced at the end and the stack's memory watched throughout.

Stack and client as bench/e2e.py (bench/pipeline.py): gunicorn (2 sync workers) and one Celery
worker (`-c 2`, production settings, so pool children are replaced every 10,000 tasks), the fresh
bench database, one user with a CLI token. After a warm-up, distinct signed webhooks are sent
open-loop at `--rate` per second for `--seconds`, then `--bursts` bursts of `--burst-size`
webhooks sent at once, `--burst-gap` seconds apart; the CLI's sync loop and a SQL poller run
throughout (every `--interval` seconds), then the run waits (up to `--drain` seconds) until every
ledger row is final and every answered event is in /v1/sync.

Books (SQL, bench/pipeline.py account): bodies answered 200 = ledger rows, each exactly once = rows
processed or visibly dead-lettered (lost = 0); every processed event has exactly the typed rows
its body makes (duplicated = 0, missing = 0).

Memory: VmRSS of the gunicorn master and each worker, of the Celery parent and of its pool
children (the largest live child at each sample, since children are replaced by design), every
`--sample` seconds from /proc/<pid>/status, from the first measured webhook to the end of the
drain. Growth = mean over the second half of that window minus the mean over the first half;
the bound (`--bound-mib`, default 20 MiB) applies to each process.

Baseline: the soak is a correctness and stability run, not a speed one; its latencies are shown
beside the same run's SQL poll (as bench/e2e.py) for the steady part and for the bursts.

The report goes to stdout and to bench/results/soak.md; the goal lines never fail the run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import sys
import time
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
    write_results,
)
from bench.e2e import LATENCY_HEADER, latency_row
from bench.pipeline import (
    WORKER_CONCURRENCY,
    Accounting,
    BenchStack,
    Bodies,
    DbPoller,
    Growth,
    Latency,
    RssSampler,
    Sender,
    SyncPoller,
    Tracker,
    account,
    memory_growth,
    prepare_run,
    send_burst,
    send_steady,
    wait_final,
    wait_visible,
    warm_up,
)

BOUND_MIB = 20.0


def books_goal(books: Accounting) -> list[str]:
    return [
        (
            "goal: answered 200 = ledger rows exactly once = processed or visibly dead-lettered; lost = 0, "
            "duplicated typed rows = 0"
        ),
        (
            f"-> {'MET' if books.balanced else 'NOT MET'}: {books.answered_200} answered 200, {books.ledger_rows} ledger "
            f"rows ({books.duplicated} stored twice), processed {books.states.get('processed', 0)}, dead "
            f"{books.states.get('dead', 0)}, lost {books.lost}, duplicated typed rows {books.typed_duplicated}, "
            f"missing typed rows {books.typed_missing}"
        ),
    ]


def memory_goal(growth: list[Growth], bound: float) -> list[str]:
    worst = max(growth, key=lambda g: g.growth_mib, default=None)
    ok = worst is not None and worst.growth_mib <= bound
    return [
        (
            f"goal: memory flat: no gunicorn or Celery process grows more than {bound:g} MiB (mean VmRSS, second half "
            "of the soak against the first)"
        ),
        "-> not measured"
        if worst is None
        else f"-> {'MET' if ok else 'NOT MET'}: largest growth {worst.growth_mib:+.1f} MiB ({worst.growth_pct:+.1f} %), "
        f"{worst.name}",
    ]


def memory_rows(growth: list[Growth]) -> list[list[str]]:
    return [
        [
            g.name,
            str(g.pids),
            str(g.samples),
            fmt(g.first_mib),
            fmt(g.second_mib),
            f"{g.growth_mib:+.1f}",
            f"{g.growth_pct:+.1f} %",
            fmt(g.peak_mib),
        ]
        for g in growth
    ]


MEMORY_HEADER = ["process", "pids", "samples", "first half MiB", "second half MiB", "growth MiB", "growth", "peak MiB"]


def report(args: argparse.Namespace, pg: dict[str, str], figures: dict[str, Any]) -> str:
    load = os.getloadavg()
    books: Accounting = figures["books"]
    lines = [
        "# Soak",
        "",
        (
            f"- run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC, commit {git_revision()}, "
            f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
        ),
        (
            f"- load: {args.warmup_events} warm-up webhooks, then {figures['steady']} distinct signed webhooks "
            f"open-loop at {args.rate:g}/s for {args.seconds:g} s (achieved {figures['rate']:.1f}/s), then "
            f"{args.bursts} bursts of {args.burst_size} sent at once, {args.burst_gap:g} s apart; the drain took "
            f"{figures['drain']:.1f} s; the whole window {figures['window']:.0f} s"
        ),
        (
            f"- stack: gunicorn amy.wsgi ({WEB_WORKERS} sync workers) + `celery worker -c {WORKER_CONCURRENCY}` "
            "(prefork, production settings: acks late, prefetch 1, pool children replaced every 10,000 tasks), "
            "LOG_LEVEL=WARNING; the CLI's sync loop and a SQL poller every "
            f"{1000 * args.interval:g} ms throughout; the longest transaction seen open in the cluster (it holds "
            f"back every sync) was {figures['oldest'][0]:.1f} s old (database {figures['oldest'][1]})"
        ),
        (
            f"- memory: VmRSS every {args.sample:g} s over the window; growth = mean of the second half minus "
            "mean of the first; pool children as one series (the largest live child at each sample)"
        ),
        (
            f"- PostgreSQL {pg.get('server_version')} (fsync={pg.get('fsync')}, synchronous_commit="
            f"{pg.get('synchronous_commit')}), database {DB_NAME}; Redis db {REDIS_DB}"
        ),
        "",
        *books_goal(books),
        "",
        *memory_goal(figures["growth"], args.bound_mib),
        "",
        "Accounting (SQL, after the drain):",
        "",
        *books.lines(),
        "",
        "Memory (VmRSS):",
        "",
        *markdown_table(MEMORY_HEADER, memory_rows(figures["growth"])),
        "",
        "Latency from the scheduled send (the SQL poll is the same run's baseline):",
        "",
        *markdown_table(
            ["part", *LATENCY_HEADER],
            [[part, *latency_row(name, latency)] for part, name, latency in figures["latency"]],
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300.0, help="steady sending time (default 300)")
    parser.add_argument("--rate", type=float, default=50.0, help="steady webhooks per second (default 50)")
    parser.add_argument("--bursts", type=int, default=5, help="bursts after the steady part (default 5)")
    parser.add_argument("--burst-size", type=int, default=200, help="webhooks per burst, sent at once (default 200)")
    parser.add_argument("--burst-gap", type=float, default=10.0, help="seconds between bursts (default 10)")
    parser.add_argument("--interval", type=float, default=0.1, help="sync and SQL poll interval (default 0.1 s)")
    parser.add_argument("--sample", type=float, default=2.0, help="memory sample interval (default 2 s)")
    parser.add_argument("--bound-mib", type=float, default=BOUND_MIB, help="memory growth bound per process")
    parser.add_argument("--warmup-events", type=int, default=40, help="warm-up webhooks (default 40)")
    parser.add_argument("--drain", type=float, default=120.0, help="bound on the final wait (default 120 s)")
    args = parser.parse_args(argv)
    if min(args.seconds, args.rate, args.warmup_events, args.burst_size) <= 0 or args.bursts < 0:
        parser.error("sizes must be positive")
    exit_cleanly_on_signals()
    RESULTS.mkdir(parents=True, exist_ok=True)

    log(f"database {DB_NAME}: drop, create, migrate; Redis db {REDIS_DB}: flush; a user and a CLI token")
    pg, setup = prepare_run()
    steady_count = round(args.rate * args.seconds)
    log(f"building {steady_count + args.bursts * args.burst_size} distinct bodies")
    bodies = Bodies().many(steady_count + args.bursts * args.burst_size)
    tracker = Tracker()
    stack = BenchStack("soak")
    pollers: list[Any] = []
    sampler: RssSampler | None = None
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
        wait_visible(tracker, 30)
        gunicorn_pid, celery_pid = stack.pids
        sampler = RssSampler(gunicorn_pid=gunicorn_pid, celery_pid=celery_pid, interval=args.sample)
        sender = Sender(stack.web.url, SECRET, tracker, threads=max(64, args.burst_size + 16), label="soak")
        start = time.monotonic()
        sampler.start()
        log(f"steady: {steady_count} webhooks at {args.rate:g}/s")
        rate = send_steady(sender, bodies[:steady_count], rate=args.rate)
        stack.check()
        for n in range(args.bursts):
            log(f"burst {n + 1}/{args.bursts}: {args.burst_size} at once")
            first = steady_count + n * args.burst_size
            send_burst(sender, bodies[first : first + args.burst_size], first_index=first)
            time.sleep(args.burst_gap)
        sender.close()
        drain_start = time.monotonic()
        log(f"drain: every ledger row final and every answered event in /v1/sync (up to {args.drain:g} s)")
        with psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
            wait_final(conn, after_id, args.drain)
            wait_visible(tracker, max(1.0, args.drain - (time.monotonic() - drain_start)))
            end = time.monotonic()
            sampler.stop()
            stack.check()
            for poller in pollers:
                poller.stop()
            books = account(conn, tracker, after_id=after_id, rows_per_type=setup["rows_per_type"])
    finally:
        if sampler is not None:
            sampler.stop()
        for poller in pollers:
            poller.stop()
        stack.stop()
        with contextlib.suppress(redis.RedisError):
            flush_bench_redis()

    latency = []
    for part in ("steady", "burst"):
        answered = tracker.answered((part,))
        if answered:
            latency.append((part, "typed row in /v1/sync", Latency.of(answered, tracker.in_sync)))
            latency.append((part, "typed row in PostgreSQL (SQL poll)", Latency.of(answered, tracker.in_db)))
            latency.append((part, "the webhook's 200 answer", Latency.of(answered, answer=True)))
    figures = {
        "steady": steady_count,
        "rate": rate,
        "drain": end - drain_start,
        "window": end - start,
        "books": books,
        "growth": memory_growth(sampler.samples, start, end),
        "latency": latency,
        "oldest": db.oldest_transaction,
    }
    text = report(args, pg, figures)
    write_results("soak", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
