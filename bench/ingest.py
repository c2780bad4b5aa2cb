"""Benchmark of the Terra webhook ingest path (run it with `bench/run`).

Web: gunicorn (amy.wsgi, 2 sync workers, as in production) on a loopback port, fed signed daily
bodies (each a new ledger row) by bench/load.py at several concurrencies. No Celery worker: the
nudges accumulate in Redis database 14, flushed between phases.

Baseline, in the same run: a bare Python process (no Django, no HTTP) doing only what the webhook
must do per body: the same ledger INSERT (autocommit, one transaction each) and the same Celery
publish to `terra-events`, with one psycopg connection and one producer per thread.

Each phase starts from an empty raw_events table in the dedicated `amy_bench` database (dropped and
recreated at the start) and an empty Redis database 14. The table goes to stdout and to
bench/results/ingest.md; the goal line is informational and never fails the run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import pstats
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis

from bench.common import (
    DATABASE_URL,
    DB_NAME,
    PYTHON,
    REDIS_DB,
    REDIS_URL,
    RESULTS,
    ROOT,
    SECRET,
    WEB_WORKERS,
    CpuSnapshot,
    cpu_usage,
    exit_cleanly_on_signals,
    flush_bench_redis,
    fmt,
    git_revision,
    log,
    markdown_table,
    migrate,
    percentile,
    recreate_database,
    service_env,
    web_server,
    write_results,
)
from harness.processes import Gunicorn, kill_group

GOAL_CONCURRENCY = 8
GOAL_RATIO = 0.25
GOAL_P99_MS = 20.0
GOAL_TEXT = f"goal (concurrency {GOAL_CONCURRENCY}): throughput >= {GOAL_RATIO:.0%} of baseline and server p99 <= {GOAL_P99_MS:g} ms"


# Setup
# ------------------------------------------------------------------------------


def reset_state() -> None:
    """An empty ledger and an empty Redis db 14 before each phase (outside the measured window)."""
    with psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
        # trace_events too: every traced phase then writes into a table of the same size.
        conn.execute("TRUNCATE raw_events, trace_events RESTART IDENTITY CASCADE")
    flush_bench_redis()


# CPU accounting from /proc (who used the 2 cores during a window)
# ------------------------------------------------------------------------------


# Phases
# ------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    mode: str
    concurrency: int
    summary: dict[str, Any]
    cpu: dict[str, float] = field(default_factory=dict)
    server_ms: list[float] = field(default_factory=list)


def run_phase(
    mode: str, concurrency: int, phase: int, args: argparse.Namespace, web: Gunicorn | None, seconds: float
) -> PhaseResult:
    label = f"{mode}-c{concurrency}-p{phase}"
    command = [
        PYTHON,
        "-m",
        "bench.load",
        mode,
        "--concurrency",
        str(concurrency),
        "--warmup",
        str(args.warmup),
        "--seconds",
        str(seconds),
        "--phase",
        str(phase),
        "--label",
        label,
        "--secret",
        SECRET,
        "--handshake",
    ]
    if mode == "web":
        assert web is not None
        command += ["--url", web.url]
    else:
        command += ["--database-url", DATABASE_URL, "--redis-url", REDIS_URL]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_"))}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    web_master = web.process.pid if web and web.process else None
    snapshots: dict[str, CpuSnapshot] = {}
    summary: dict[str, Any] | None = None
    deadline = time.monotonic() + args.warmup + seconds + 90
    try:
        assert process.stdout is not None
        for line in process.stdout:  # the child's own timeouts bound this loop
            line = line.strip()
            if line in ("start", "end"):
                snapshots[line] = CpuSnapshot.take()
            if line == "end":
                assert process.stdin is not None
                with contextlib.suppress(OSError):
                    process.stdin.write("sampled\n")
                    process.stdin.close()
            elif line.startswith("result "):
                summary = json.loads(line.removeprefix("result "))
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        kill_group(process)
    if summary is None or "setup_error" in summary:
        raise RuntimeError(f"{label}: load process failed (exit {process.returncode}): {summary}")
    result = PhaseResult(mode, concurrency, summary)
    if "start" in snapshots and "end" in snapshots:
        result.cpu = cpu_usage(
            snapshots["start"], snapshots["end"], load_pid=process.pid, web_master=web_master if web else None
        )
    if web is not None:
        time.sleep(0.2)  # the access log lines of the last requests
        result.server_ms = web.server_latencies_ms(label)
    return result


# Report
# ------------------------------------------------------------------------------


def ratio(web: PhaseResult, base: PhaseResult) -> float | None:
    if not base.summary["per_second"]:
        return None
    return web.summary["per_second"] / base.summary["per_second"]


def results_table(pairs: list[tuple[PhaseResult, PhaseResult]]) -> list[str]:
    header = [
        "concurrency",
        "webhook req/s",
        "p50 ms",
        "p99 ms",
        "baseline ops/s",
        "baseline p50",
        "baseline p99",
        "throughput ratio",
        "webhook errors",
        "baseline errors",
        "server p50 ms",
        "server p99 ms",
    ]
    rows = []
    for web, base in pairs:
        w, b = web.summary, base.summary
        rows.append(
            [
                str(web.concurrency),
                fmt(w["per_second"]),
                fmt(w["p50_ms"], 2),
                fmt(w["p99_ms"], 2),
                fmt(b["per_second"]),
                fmt(b["p50_ms"], 2),
                fmt(b["p99_ms"], 2),
                fmt(None if ratio(web, base) is None else 100 * ratio(web, base), 1) + " %",
                str(w["errors"]),
                str(b["errors"]),
                fmt(percentile(web.server_ms, 50), 2),
                fmt(percentile(web.server_ms, 99), 2),
            ]
        )
    return markdown_table(header, rows)


def cpu_table(pairs: list[tuple[PhaseResult, PhaseResult]]) -> list[str]:
    groups = ["gunicorn workers", "load/baseline process", "postgres", "redis", "everything else", "machine total"]
    rows = []
    for web, base in pairs:
        for phase in (web, base):
            if phase.cpu:
                rows.append(
                    [
                        str(phase.concurrency),
                        phase.mode,
                        *(fmt(phase.cpu.get(g), 2) for g in groups),
                        fmt(1000 * phase.cpu["machine total"] / max(phase.summary["per_second"], 1e-9), 2),
                    ]
                )
    return markdown_table(["concurrency", "phase", *groups, "core-ms per op"], rows)


def goal_lines(pairs: list[tuple[PhaseResult, PhaseResult]]) -> list[str]:
    lines = [GOAL_TEXT]
    match = [(w, b) for w, b in pairs if w.concurrency == GOAL_CONCURRENCY]
    if not match:
        return [*lines, f"-> not measured (concurrency {GOAL_CONCURRENCY} was not run)"]
    web, base = match[0]
    # The goal is on server latency (gunicorn's own request time); the client figure also
    # counts the wait for one of the 2 sync workers and is printed beside it.
    r, p99 = ratio(web, base), percentile(web.server_ms, 99)
    ratio_ok = r is not None and r >= GOAL_RATIO
    p99_ok = p99 is not None and p99 <= GOAL_P99_MS
    verdict = "MET" if ratio_ok and p99_ok else "NOT MET"
    lines.append(
        f"-> {verdict}: throughput {fmt(None if r is None else 100 * r)} % of baseline "
        f"({'ok' if ratio_ok else 'short'}), server p99 {fmt(p99, 2)} ms ({'ok' if p99_ok else 'over'}); "
        f"client p99 {fmt(web.summary['p99_ms'], 2)} ms"
    )
    return lines


def report(pairs: list[tuple[PhaseResult, PhaseResult]], args: argparse.Namespace, pg: dict[str, str]) -> str:
    load = os.getloadavg()
    lines = [
        "# Webhook ingest benchmark",
        "",
        (
            f"- run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC, commit {git_revision()}, "
            f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
        ),
        (
            f"- each phase: {args.warmup:g} s warm-up, then {args.seconds:g} s measured; "
            f"web = gunicorn amy.wsgi, {WEB_WORKERS} sync workers, no Celery worker; "
            "body = tests/fixtures/terra/daily.json (4.3 kB) with a distinct user.user_id, signed"
        ),
        (
            f"- PostgreSQL {pg.get('server_version')} (fsync={pg.get('fsync')}, "
            f"synchronous_commit={pg.get('synchronous_commit')}, wal_sync_method={pg.get('wal_sync_method')}), "
            f"database {DB_NAME} truncated before each phase; Redis db {REDIS_DB} flushed before each phase"
        ),
        (
            "- webhook p50/p99: client-side wall time per request (new TCP connection each time: the sync "
            "worker closes it), queueing for a worker included. server p50/p99: gunicorn's request time "
            "(from the parsed request to the last byte written, no accept-queue wait)"
        ),
        (
            "- baseline: one bare process (no Django, no HTTP), a thread per concurrency slot, each with "
            "its own psycopg connection (autocommit, the `_INSERT_SQL` of ingest/services/webhook.py) and "
            "its own producer (Celery `send_task` ingest.normalize_raw_event to terra-events)"
        ),
        "",
        *results_table(pairs),
        "",
        *goal_lines(pairs),
        "",
        (
            "CPU during the measured window, in cores (this machine has "
            f"{os.cpu_count()}); core-ms per op = machine total / ops per second:"
        ),
        "",
        *cpu_table(pairs),
    ]
    split = [
        [
            str(base.concurrency),
            *(
                fmt(base.summary.get("parts", {}).get(part, {}).get(stat), 2)
                for part in ("insert", "publish")
                for stat in ("p50_ms", "mean_ms")
            ),
        ]
        for _, base in pairs
    ]
    lines += [
        "",
        "Baseline, time per operation in the INSERT (+ fetch of the id) and in the Celery publish:",
        "",
        *markdown_table(["concurrency", "insert p50 ms", "insert mean ms", "publish p50 ms", "publish mean ms"], split),
    ]
    errors = [
        f"- {p.mode} c{p.concurrency}: {p.summary['error_kinds']}"
        for pair in pairs
        for p in pair
        if p.summary["errors"]
    ]
    if errors:
        lines += ["", "Errors:", *errors]
    return "\n".join(lines) + "\n"


# Tracer cost: traced and untraced web phases alternating in one run
# ------------------------------------------------------------------------------

TRACER_GOAL = 0.10
TRACER_GOAL_TEXT = (
    f"goal: webhook throughput with tracing on within {TRACER_GOAL:.0%} of tracing off, measured in the same run"
)


@dataclass
class TracedPhase:
    """One web phase of the alternating run, with what the traced server wrote."""

    traced: bool
    round: int
    result: PhaseResult
    ledger_rows: int = 0
    trace_rows: int = 0


def count_rows() -> tuple[int, int]:
    """(raw_events, trace_events) rows now: the traced phase must have written its traces."""
    with psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
        ledger = conn.execute("SELECT count(*) FROM raw_events").fetchone()
        traces = conn.execute("SELECT count(*) FROM trace_events").fetchone()
    return (ledger[0] if ledger else 0), (traces[0] if traces else 0)


def cost(traced: float | None, untraced: float | None) -> float | None:
    """The throughput lost to tracing, as a share of the untraced throughput."""
    if not traced or not untraced:
        return None
    return 1 - traced / untraced


def tracing_report(phases: list[TracedPhase], args: argparse.Namespace, concurrency: int) -> str:
    load = os.getloadavg()
    by_mode = {mode: [p for p in phases if p.traced is mode] for mode in (True, False)}

    def total_rate(items: list[TracedPhase]) -> float:
        # Every phase measures the same window, so the mean of the rates is the pooled rate.
        return sum(p.result.summary["per_second"] for p in items) / max(1, len(items))

    def pooled_ms(items: list[TracedPhase]) -> list[float]:
        return sorted(ms for p in items for ms in p.result.server_ms)

    def worker_ms(p: TracedPhase) -> float | None:
        rate = p.result.summary["per_second"]
        cores = p.result.cpu.get("gunicorn workers")
        return None if not rate or cores is None else 1000 * cores / rate

    rows = []
    for p in phases:
        s = p.result.summary
        rows.append(
            [
                str(p.round),
                "on" if p.traced else "off",
                fmt(s["per_second"]),
                fmt(percentile(p.result.server_ms, 50), 2),
                fmt(percentile(p.result.server_ms, 99), 2),
                fmt(s["p50_ms"], 2),
                str(s["errors"]),
                fmt(worker_ms(p), 3),
                fmt(p.result.cpu.get("machine total"), 2),
                f"{p.trace_rows / p.ledger_rows:.2f}" if p.traced and p.ledger_rows else "-",
            ]
        )
    header = [
        "round",
        "tracing",
        "webhook req/s",
        "server p50 ms",
        "server p99 ms",
        "client p50 ms",
        "errors",
        "worker core-ms/req",
        "machine cores",
        "trace rows/webhook",
    ]
    pair_costs = []
    for r in sorted({p.round for p in phases}):
        on = [p for p in by_mode[True] if p.round == r]
        off = [p for p in by_mode[False] if p.round == r]
        if on and off:
            c = cost(on[0].result.summary["per_second"], off[0].result.summary["per_second"])
            if c is not None:
                pair_costs.append(c)
    on_rate, off_rate = total_rate(by_mode[True]), total_rate(by_mode[False])
    total_cost = cost(on_rate, off_rate)
    on_ms, off_ms = pooled_ms(by_mode[True]), pooled_ms(by_mode[False])
    worker_on = [w for p in by_mode[True] if (w := worker_ms(p)) is not None]
    worker_off = [w for p in by_mode[False] if (w := worker_ms(p)) is not None]
    summary_rows = [
        [
            label,
            fmt(total_rate(items)),
            fmt(percentile(ms, 50), 2),
            fmt(percentile(ms, 99), 2),
            fmt(sum(w) / len(w) if w else None, 3),
        ]
        for label, items, ms, w in (
            ("tracing on", by_mode[True], on_ms, worker_on),
            ("tracing off", by_mode[False], off_ms, worker_off),
        )
    ]
    ok = total_cost is not None and total_cost <= TRACER_GOAL
    spread = (
        f"per-round cost {', '.join(f'{100 * c:.1f} %' for c in pair_costs)} "
        f"(min {100 * min(pair_costs):.1f} %, median {100 * sorted(pair_costs)[len(pair_costs) // 2]:.1f} %, "
        f"max {100 * max(pair_costs):.1f} %)"
        if pair_costs
        else "no complete round"
    )
    worker_on_mean = sum(worker_on) / len(worker_on) if worker_on else None
    worker_off_mean = sum(worker_off) / len(worker_off) if worker_off else None
    worker_extra = worker_on_mean / worker_off_mean - 1 if worker_on_mean and worker_off_mean else None
    lines = [
        "# Tracer cost on the webhook path",
        "",
        (
            f"- run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC, commit {git_revision()}, "
            f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
        ),
        (
            f"- {args.rounds} rounds at concurrency {concurrency}, each one traced and one untraced web phase "
            f"({args.warmup:g} s warm-up + {args.seconds:g} s measured), the order flipped every round "
            "(on off, off on, ...) so that a drift in the machine's load falls on both sides"
        ),
        (
            f"- two gunicorn servers (amy.wsgi, {WEB_WORKERS} sync workers each, LOG_LEVEL=WARNING, stdout to a "
            "file) started once, AMY_TRACING=true and AMY_TRACING=false; only one is loaded at a time. "
            f"Database {DB_NAME} (raw_events and trace_events truncated before each phase), Redis db {REDIS_DB}"
        ),
        (
            "- server p50/p99: gunicorn's request time; worker core-ms/req: CPU of the loaded server's workers "
            "(trace writer thread included) per webhook; trace rows/webhook: trace_events rows / raw_events rows "
            "after the traced phase (its warm-up included)"
        ),
        "",
        *markdown_table(header, rows),
        "",
        *markdown_table(
            ["", "webhook req/s (mean)", "server p50 ms", "server p99 ms", "worker core-ms/req"], summary_rows
        ),
        "",
        TRACER_GOAL_TEXT,
        (
            f"-> {'MET' if ok else 'NOT MET'}: tracing costs {fmt(None if total_cost is None else 100 * total_cost)} % "
            f"of the throughput ({fmt(on_rate)} vs {fmt(off_rate)} webhooks/s); {spread}; "
            f"the workers' CPU per webhook {fmt(None if worker_extra is None else 100 * worker_extra)} % higher with tracing"
        ),
    ]
    return "\n".join(lines) + "\n"


def run_tracing_both(args: argparse.Namespace) -> int:
    """Traced and untraced web phases alternating in one run, at one concurrency."""
    levels = [int(c) for c in (args.concurrency or str(GOAL_CONCURRENCY)).split(",") if c.strip()]
    if len(levels) != 1:
        raise SystemExit("--tracing both takes one --concurrency")
    concurrency = levels[0]
    log(f"database {DB_NAME}: drop, create, migrate")
    recreate_database()
    migrate()
    servers = {}
    for traced in (True, False):
        name = "on" if traced else "off"
        access_log, server_log = (
            RESULTS / f"gunicorn-tracing-{name}-access.log",
            RESULTS / f"gunicorn-tracing-{name}.log",
        )
        for path in (access_log, server_log):
            path.unlink(missing_ok=True)
        servers[traced] = web_server(access_log, server_log, env=service_env(tracing=traced))
    phases: list[TracedPhase] = []
    try:
        for traced, web in servers.items():
            log(f"gunicorn amy.wsgi on {web.url}, tracing {'on' if traced else 'off'}")
            web.start()
        phase = 0
        for round_ in range(1, args.rounds + 1):
            order = (True, False) if round_ % 2 else (False, True)
            for traced in order:
                log(f"round {round_}/{args.rounds}, tracing {'on' if traced else 'off'}, concurrency {concurrency}")
                reset_state()
                result = run_phase("web", concurrency, phase, args, servers[traced], args.seconds)
                phase += 1
                item = TracedPhase(traced, round_, result)
                if traced:
                    time.sleep(1.0)  # past the writer's flush interval: count what the phase wrote
                item.ledger_rows, item.trace_rows = count_rows()
                phases.append(item)
                s = result.summary
                log(
                    f"  {s['per_second']:.1f}/s, server p50 {fmt(percentile(result.server_ms, 50), 2)} ms, "
                    f"p99 {fmt(percentile(result.server_ms, 99), 2)} ms, {s['errors']} errors"
                    + (f", {item.trace_rows} trace rows for {item.ledger_rows} webhooks" if traced else "")
                )
    finally:
        for web in servers.values():
            web.stop()
        with contextlib.suppress(redis.RedisError, psycopg.Error):
            reset_state()
    text = tracing_report(phases, args, concurrency)
    write_results("ingest-tracing", text)
    return 0


# Optional profile
# ------------------------------------------------------------------------------

PROFILE_BUCKETS = [
    # (label, file suffix, function name): cumulative time per request; nested, so they overlap.
    ("whole request in the worker (gunicorn handle_request)", "gunicorn/workers/sync.py", "handle_request"),
    ("  gunicorn: parse the request", "gunicorn/http/parser.py", "__next__"),
    ("  gunicorn: access log line", "gunicorn/glogging.py", "access"),
    ("  gunicorn: close the connection", "gunicorn/util.py", "close_graceful"),
    ("  Django handler incl. middleware", "django/core/handlers/base.py", "get_response"),
    ("    URL resolution", "django/core/handlers/base.py", "resolve_request"),
    ("    TerraWebhookView.post", "ingest/views.py", "post"),
    ("      read_capped_body", "ingest/views.py", "read_capped_body"),
    ("      verify_signature", "ingest/signature.py", "verify_signature"),
    ("      classify", "ingest/classify.py", "classify"),
    ("      raw_event_ingest (atomic, insert, commit, publish)", "ingest/services/webhook.py", "raw_event_ingest"),
    ("        atomic __enter__ (incl. connection health check)", "django/db/transaction.py", "__enter__"),
    ("          health check SELECT 1 (is_usable)", "django/db/backends/postgresql/base.py", "is_usable"),
    ("        raw_event_insert (INSERT ... RETURNING)", "ingest/services/webhook.py", "raw_event_insert"),
    ("        COMMIT", "django/db/backends/base/base.py", "commit"),
    ("        _publish_once (on_commit hook)", "ingest/publish.py", "_publish_once"),
    ("          Celery send_task", "celery/app/base.py", "send_task"),
    ("            kombu: new redis client per publish", "kombu/transport/redis.py", "_create_client"),
    ("            LPUSH round trip", "redis/commands/core.py", "lpush"),
    ("  time psycopg spent waiting on the server (all statements)", "psycopg/connection.py", "wait"),
]


def profile(args: argparse.Namespace) -> str:
    """A separate, profiled gunicorn at concurrency 8: where the worker's time goes."""
    out = RESULTS / "profile"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("gunicorn-*.prof"):
        old.unlink()
    env = {**service_env(), "BENCH_PROFILE_DIR": str(out)}
    web = web_server(
        RESULTS / "gunicorn-profile-access.log",
        RESULTS / "gunicorn-profile.log",
        config=ROOT / "bench" / "gunicorn_profile.py",
        env=env,
    )
    try:
        reset_state()
        web.start()
        result = run_phase("web", GOAL_CONCURRENCY, 99, args, web, args.profile_seconds)
    finally:
        web.stop(grace=15)  # graceful: the workers dump their profiles on exit
    files = sorted(out.glob("gunicorn-*.prof"))
    if not files:
        return "profile: no profile written (did the workers exit gracefully?)\n"
    stats = pstats.Stats(*map(str, files))
    requests = max(1, result.summary["ok"] + result.summary["errors"])
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    lines = [
        (
            f"Profile (cProfile, both workers, concurrency {GOAL_CONCURRENCY}, {args.profile_seconds:g} s; "
            f"{result.summary['per_second']:.0f} req/s under the profiler), cumulative ms per request over every "
            "request the workers handled, warm-up included; cProfile inflates Python-heavy parts:"
        ),
        "",
    ]
    handled = sum(
        v[1] for k, v in raw.items() if k[0].endswith("gunicorn/workers/sync.py") and k[2] == "handle_request"
    )
    handled = handled or requests
    for label, suffix, name in PROFILE_BUCKETS:
        # max, not sum: a name can match a method and the override it calls (e.g. __init__).
        total = max((v[3] for k, v in raw.items() if k[0].endswith(suffix) and k[2] == name), default=0)
        if total:
            lines.append(f"  {fmt(1000 * total / handled, 3):>8} ms  {label}")
    lines += ["", f"(per request = over {handled} requests; full listing in {out}/top.txt)", ""]
    with (out / "top.txt").open("w") as listing:
        stats.stream = listing  # type: ignore[attr-defined]
        stats.sort_stats("cumulative").print_stats(80)
        stats.sort_stats("tottime").print_stats(60)
    return "\n".join(lines) + "\n"


# Main
# ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per phase (default 10)")
    parser.add_argument("--warmup", type=float, default=1.5, help="warm-up per phase (default 1.5)")
    parser.add_argument(
        "--concurrency", default=None, help="comma-separated (default 1,8,32; with --tracing both, one level: 8)"
    )
    parser.add_argument("--profile", action="store_true", help="then profile a gunicorn worker at concurrency 8")
    parser.add_argument("--profile-seconds", type=float, default=5.0)
    parser.add_argument(
        "--tracing",
        choices=("on", "off", "both"),
        default=None,
        help=(
            "on/off: the web server with or without the tracer (default: BENCH_TRACING, on); both: no baseline, "
            "traced and untraced web phases alternating for --rounds rounds, and the tracer's cost"
        ),
    )
    parser.add_argument("--rounds", type=int, default=4, help="with --tracing both: rounds (default 4)")
    args = parser.parse_args(argv)
    exit_cleanly_on_signals()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.tracing == "both":
        return run_tracing_both(args)
    if args.tracing is not None:
        os.environ["BENCH_TRACING"] = "true" if args.tracing == "on" else "false"
    levels = [int(c) for c in (args.concurrency or "1,8,32").split(",") if c.strip()]

    log(f"database {DB_NAME}: drop, create, migrate")
    pg = recreate_database()
    migrate()
    access_log, server_log = RESULTS / "gunicorn-access.log", RESULTS / "gunicorn.log"
    for path in (access_log, server_log):
        path.unlink(missing_ok=True)
    web = web_server(access_log, server_log)
    pairs: list[tuple[PhaseResult, PhaseResult]] = []
    try:
        reset_state()
        log(f"gunicorn amy.wsgi on {web.url} ({WEB_WORKERS} sync workers)")
        web.start()
        phase = 0
        for concurrency in levels:
            results = {}
            for mode in ("web", "baseline"):
                log(f"{mode} at concurrency {concurrency}: {args.warmup:g} s warm-up + {args.seconds:g} s")
                reset_state()
                results[mode] = run_phase(mode, concurrency, phase, args, web if mode == "web" else None, args.seconds)
                phase += 1
                s = results[mode].summary
                log(
                    f"  {s['per_second']:.1f}/s, p50 {fmt(s['p50_ms'], 2)} ms, p99 {fmt(s['p99_ms'], 2)} ms, "
                    f"{s['errors']} errors"
                )
            pairs.append((results["web"], results["baseline"]))
    finally:
        web.stop()
        with contextlib.suppress(redis.RedisError):
            reset_state()

    text = report(pairs, args, pg)
    if args.profile:
        log(f"profiled gunicorn at concurrency {GOAL_CONCURRENCY} ({args.profile_seconds:g} s)")
        try:
            text += "\n" + profile(args)
        finally:
            with contextlib.suppress(redis.RedisError, psycopg.Error):
                reset_state()
    write_results("ingest", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
