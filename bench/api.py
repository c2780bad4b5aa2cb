"""Benchmark of the CLI's read API (run it with `bench/run api`): warm `GET /v1/me` and a full
`GET /v1/sync` of one user's year of data, each against a bare baseline in the same run.

Data (bench/api_load.py seed, through the ORM in a Django process): the benchmark user and 4 other
users (so the per-user filtering is realistic), each with two Terra connections and a year of rows:
365 daily summaries, 365 sleep sessions, 400 activities, 1,500 body measurements, written in one
transaction per user and day (the sync_stamp triggers stamp them), and a parsed lab upload with
100 biomarkers. Then VACUUM ANALYZE, and a check that no transaction holds the sync's horizon
(xmin) below the seeded rows.

Web: gunicorn (amy.wsgi, 2 sync workers) on a loopback port, LOG_LEVEL=WARNING, without Terra
credentials (so /v1/me serves what is stored and never calls Terra), the cache in Redis database 14
(flushed), and the per-user rate limit raised so that it runs but never refuses. A CLI bearer token minted by
accounts.tokens.cli_token_issue. One client process at concurrency 1, a new TCP connection per
request (the sync worker closes it):

- /v1/me: W warm-up requests, then N measured ones; client and server (gunicorn's access log)
  latency.
- full sync: a fresh client (no cursor) calls `/v1/sync?limit=L` and follows cursors until
  `has_more` is false; timed as the sum of its requests (JSON parsing outside the clock); R
  repetitions after a warm-up; every repetition must bring exactly the user's seeded rows.

Baselines, in the same run: one bare Python process (no Django, no HTTP), one persistent psycopg
connection: for /v1/me, the user by id and their connections by user, then json.dumps; for the
sync, per synced table the same columns of the user's rows ordered by (sync_stamp, id), as dicts,
then json.dumps (datetimes as ISO strings). json.dumps is compact, as DRF's JSONRenderer writes.

The database amy_bench is dropped and recreated at the start. The report goes to stdout and to
bench/results/api.md; the goal lines are informational and never fail the run.
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
from pathlib import Path
from typing import Any

import psycopg

from bench.common import (
    DATABASE_URL,
    DB_NAME,
    PYTHON,
    REDIS_DB,
    RESULTS,
    ROOT,
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
    read_line,
    recreate_database,
    send,
    service_env,
    web_server,
    write_results,
)
from harness.processes import Gunicorn, kill_group

TABLES = (
    "daily_summary",
    "sleep_sessions",
    "activities",
    "body_measurements",
    "nutrition_daily",
    "menstruation_days",
    "biomarkers",
    "lab_uploads",
    "terra_connections",
)

# The per-user limit (600/min on /v1/*) would refuse this benchmark's ~600 requests a minute: raised,
# so the throttle still runs (its Redis read and write per request are measured) but never refuses.
USER_RATE_PER_MINUTE = "1000000"

GOAL_ME_P50_MS = 10.0
GOAL_SYNC_P50_MS = 250.0
GOAL_SYNC_RATIO = 0.40
RATIO_TEXT = (
    "% of baseline = baseline p50 time / API p50 time (at concurrency 1, the API's operations per second "
    "as a share of the baseline's)"
)


# Setup
# ------------------------------------------------------------------------------


def web_env() -> dict[str, str]:
    return {**service_env(), "AMY_USER_RATE_PER_MINUTE": USER_RATE_PER_MINUTE}


def seed(users: int) -> dict[str, Any]:
    result = subprocess.run(
        [PYTHON, "-m", "bench.api_load", "seed", "--users", str(users)],
        cwd=ROOT,
        env=service_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("result ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"seed failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return json.loads(lines[-1].removeprefix("result "))


def settle(user_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """VACUUM ANALYZE the seeded tables, then wait until the sync's horizon (the oldest running
    transaction id, cluster-wide) is past every seeded row, so that a full sync can see them all."""
    with psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"VACUUM (ANALYZE) users, cli_tokens, sync_deletions, {', '.join(TABLES)}")
        stamps = " UNION ALL ".join(f"SELECT max(sync_stamp) FROM {t} WHERE user_id = %s" for t in TABLES)
        row = conn.execute(f"SELECT max(m) FROM ({stamps}) AS s(m)", [user_id] * len(TABLES)).fetchone()
        newest = int(row[0]) if row and row[0] is not None else 0
        deadline = time.monotonic() + timeout
        while True:
            row = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").fetchone()
            xmin = int(row[0]) if row else 0
            if xmin > newest:
                return {"newest_stamp": newest, "xmin": xmin}
            if time.monotonic() > deadline:
                holders = conn.execute(
                    "SELECT pid, datname, state, xact_start, backend_xid::text FROM pg_stat_activity "
                    "WHERE backend_xid IS NOT NULL ORDER BY xact_start"
                ).fetchall()
                raise RuntimeError(
                    f"the sync horizon (xmin {xmin}) stays at or below the newest seeded stamp {newest} for "
                    f"{timeout:g} s: a transaction is open somewhere in the cluster: {holders}"
                )
            time.sleep(0.2)


# Phases
# ------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    summary: dict[str, Any]
    cpu: dict[str, float] = field(default_factory=dict)
    server_ms: list[float] = field(default_factory=list)  # per operation (a full sync: its pages summed)

    def p(self, percent: int) -> float | None:
        return self.summary.get(f"p{percent}_ms")

    @property
    def per_second(self) -> float:
        mean = self.summary.get("mean_ms")
        return 1000 / mean if mean else 0.0


def server_ms_per_operation(access_log: Path, label: str) -> list[float]:
    """gunicorn's request times (%(D)s) of the 200 answers: one value per request tagged `label`
    (/v1/me), and the sum over the pages of each full sync, tagged `label.<n>`."""
    values: list[float] = []
    syncs: dict[str, float] = {}
    with contextlib.suppress(FileNotFoundError), access_log.open() as lines:
        for line in lines:
            parts = line.split()
            if len(parts) != 3 or parts[1] != "200":
                continue
            if parts[0] == label:
                values.append(int(parts[2]) / 1000)
            elif parts[0].startswith(label + "."):
                syncs[parts[0]] = syncs.get(parts[0], 0.0) + int(parts[2]) / 1000
    return sorted(values + list(syncs.values()))


def run_phase(name: str, mode: str, options: list[str], web: Gunicorn | None) -> Phase:
    label = f"{name}-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_"))}
    process = subprocess.Popen(
        [PYTHON, "-m", "bench.api_load", mode, "--label", label, *options],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    web_master = web.process.pid if web and web.process else None
    try:
        line = read_line(process, 120, name)
        if line.startswith("result "):
            raise RuntimeError(f"{name}: {line.removeprefix('result ')}")
        if line != "start":
            raise RuntimeError(f"{name}: expected 'start', got {line!r}")
        before = CpuSnapshot.take()
        line = read_line(process, 300, name)
        if line != "end":
            raise RuntimeError(f"{name}: expected 'end', got {line!r}")
        after = CpuSnapshot.take()
        send(process, "sampled")
        summary = json.loads(read_line(process, 30, name).removeprefix("result "))
        process.wait(timeout=10)
    finally:
        kill_group(process, grace=2)
    phase = Phase(name, summary, cpu_usage(before, after, load_pid=process.pid, web_master=web_master))
    if web is not None:
        time.sleep(0.2)  # the access log lines of the last requests
        phase.server_ms = server_ms_per_operation(web.access_log, label)
    return phase


def describe(phase: Phase) -> str:
    s = phase.summary
    text = f"p50 {fmt(s['p50_ms'], 2)} ms, p99 {fmt(s['p99_ms'], 2)} ms, {s['ok']}/{s['count']} ok"
    if phase.server_ms:
        text += f"; server p50 {fmt(percentile(phase.server_ms, 50), 2)} ms"
    if s["errors"]:
        text += f"; {s['errors']} errors, first: {s['first_error']}"
    return text


# Report
# ------------------------------------------------------------------------------


def pct(api: Phase, base: Phase) -> float | None:
    a, b = api.p(50), base.p(50)
    return None if not a or b is None else 100 * b / a


def results_rows(pairs: list[tuple[str, Phase, Phase]]) -> list[list[str]]:
    rows = []
    for what, api, base in pairs:
        for kind, phase in (("API (gunicorn)", api), ("baseline (bare psycopg)", base)):
            s = phase.summary
            rows.append(
                [
                    what,
                    kind,
                    f"{s['ok']}/{s['count']}",
                    fmt(s["p50_ms"], 2),
                    fmt(s["p99_ms"], 2),
                    fmt(s["mean_ms"], 2),
                    fmt(percentile(phase.server_ms, 50), 2) if phase.server_ms else "-",
                    fmt(percentile(phase.server_ms, 99), 2) if phase.server_ms else "-",
                    f"{s['bytes']:,}" if s.get("bytes") else "-",
                    fmt(pct(api, base), 1) + " %" if phase is api else "",
                ]
            )
    return rows


def goal_lines(me: Phase, me_base: Phase, sync: Phase, sync_base: Phase) -> list[str]:
    lines = []
    p50 = me.p(50)
    ok = p50 is not None and p50 <= GOAL_ME_P50_MS and not me.summary["errors"]
    lines.append(f"goal: warm /v1/me p50 <= {GOAL_ME_P50_MS:g} ms (the source quotes 80-150 ms)")
    lines.append(
        f"-> {'MET' if ok else 'NOT MET'}: client p50 {fmt(p50, 2)} ms "
        f"(server p50 {fmt(percentile(me.server_ms, 50), 2)} ms; baseline p50 {fmt(me_base.p(50), 2)} ms, "
        f"API at {fmt(pct(me, me_base))} % of it)"
    )
    p50 = sync.p(50)
    ratio = pct(sync, sync_base)
    time_ok = p50 is not None and p50 <= GOAL_SYNC_P50_MS
    ratio_ok = ratio is not None and ratio >= 100 * GOAL_SYNC_RATIO
    ok = time_ok and ratio_ok and not sync.summary["errors"]
    lines.append("")
    lines.append(f"goal: full-year sync <= {GOAL_SYNC_P50_MS:g} ms and >= {GOAL_SYNC_RATIO:.0%} of the baseline")
    lines.append(
        f"-> {'MET' if ok else 'NOT MET'}: client p50 {fmt(p50, 1)} ms ({'ok' if time_ok else 'over'}), "
        f"{fmt(ratio)} % of the baseline ({'ok' if ratio_ok else 'short'}; baseline p50 "
        f"{fmt(sync_base.p(50), 1)} ms)"
        + (f"; {sync.summary['errors']} failed syncs" if sync.summary["errors"] else "")
    )
    return lines


def cpu_rows(phases: list[Phase]) -> list[list[str]]:
    groups = ["gunicorn workers", "load/baseline process", "postgres", "everything else", "machine total"]
    rows = []
    for phase in phases:
        if phase.cpu:
            rows.append(
                [
                    phase.name,
                    *(fmt(phase.cpu.get(g), 2) for g in groups),
                    fmt(1000 * phase.cpu["machine total"] / max(phase.per_second, 1e-9), 2),
                ]
            )
    return [
        *markdown_table(["phase", "gunicorn workers", "client / baseline", *groups[2:], "core-ms per op"], rows),
    ]


def report(
    args: argparse.Namespace,
    pg: dict[str, str],
    seeded: dict[str, Any],
    phases: dict[str, Phase],
) -> str:
    me, me_base, sync, sync_base = phases["me"], phases["me-baseline"], phases["sync"], phases["sync-baseline"]
    expected = seeded["expected"]
    load = os.getloadavg()
    lines = [
        "# API read benchmark: /v1/me and a full /v1/sync",
        "",
        (
            f"- run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC, commit {git_revision()}, "
            f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
        ),
        (
            f"- data: {seeded['users']} users, each with 2 Terra connections and a year of rows "
            f"({', '.join(f'{v:,} {k}' for k, v in expected.items() if v)} for the measured user, "
            f"{sum(expected.values()):,} rows in all), written in {seeded['transactions']:,} transactions "
            f"(one per user and day) in {seeded['seconds']:.1f} s; VACUUM ANALYZE after"
        ),
        (
            f"- web: gunicorn amy.wsgi, {WEB_WORKERS} sync workers, LOG_LEVEL=WARNING, no Terra credentials "
            f"(/v1/me never calls Terra), Redis db {REDIS_DB} for the cache (flushed first); AMY_USER_RATE_PER_MINUTE="
            f"{USER_RATE_PER_MINUTE} (the per-user throttle still reads and writes Redis on every request, but "
            "never refuses the benchmark's ~600 requests a minute); a CLI token (cli_token_issue); one client "
            "process at concurrency 1, a new TCP connection per request"
        ),
        (
            f"- /v1/me: {args.me_warmup} warm-up requests, then {args.me_requests} measured; p50/p99 client-side "
            "wall time per request; server = gunicorn's request time (%(D)s: parsed request to last byte written)"
        ),
        (
            f"- full sync: a fresh client, `/v1/sync?limit={args.limit}` then its cursors until has_more is false "
            f"({sync.summary.get('pages') or '?'} page(s)); time = sum of its requests' wall times (the client's "
            f"JSON parsing excluded); {args.sync_warmup} warm-up + {args.syncs} measured; every full sync checked "
            "to bring exactly the user's seeded rows, per table; server = the pages' gunicorn times summed"
        ),
        (
            "- baselines: one bare process, one persistent psycopg connection (client-side binding, autocommit); "
            "/v1/me: SELECT the user by id + the user's connections, compact json.dumps; sync: per synced table the same "
            "columns (all but sync_stamp) of the user's rows ORDER BY sync_stamp, id, as dicts, compact json.dumps "
            f"(datetimes as ISO strings); {args.me_warmup} / {args.sync_warmup} warm-up, then "
            f"{args.me_requests} / {args.syncs} measured"
        ),
        (
            f"- PostgreSQL {pg.get('server_version')} (fsync={pg.get('fsync')}, "
            f"synchronous_commit={pg.get('synchronous_commit')}, shared_buffers={pg.get('shared_buffers')}), "
            f"database {DB_NAME}"
        ),
        f"- {RATIO_TEXT}",
        "",
        *markdown_table(
            [
                "what",
                "path",
                "ok",
                "p50 ms",
                "p99 ms",
                "mean ms",
                "server p50 ms",
                "server p99 ms",
                "bytes",
                "% of baseline",
            ],
            results_rows([("/v1/me (warm)", me, me_base), ("full-year sync", sync, sync_base)]),
        ),
        "",
        *goal_lines(me, me_base, sync, sync_base),
        "",
        f"Rows per full sync: {sum(expected.values()):,} expected ({json.dumps(expected)}); checked on every sync.",
        "",
        (
            f"CPU during the measured window, in cores (this machine has {os.cpu_count()}); core-ms per op = "
            "machine total / operations per second (1000 / mean ms):"
        ),
        "",
        *cpu_rows([me, me_base, sync, sync_base]),
    ]
    errors = [f"- {p.name}: {p.summary['error_kinds']}: {p.summary['first_error']}" for p in phases.values()]
    errors = [e for e, p in zip(errors, phases.values(), strict=True) if p.summary["errors"]]
    if errors:
        lines += ["", "Errors:", *errors]
    return "\n".join(lines) + "\n"


# Optional profile
# ------------------------------------------------------------------------------

PROFILE_BUCKETS = [
    # (label, file suffix, function name): cumulative time per request; nested, so they overlap.
    ("whole request in the worker (gunicorn handle_request)", "gunicorn/workers/sync.py", "handle_request"),
    ("  Django handler incl. middleware", "django/core/handlers/base.py", "get_response"),
    ("    DRF dispatch (auth, throttle, view)", "rest_framework/views.py", "dispatch"),
    ("      authentication (BearerTokenAuthentication)", "accounts/authentication.py", "authenticate"),
    ("        cli_token_verify (JWT decode + jti lookup)", "accounts/tokens.py", "cli_token_verify"),
    ("        User get_or_create", "django/db/models/query.py", "get_or_create"),
    ("      per-user throttle (Redis get + set)", "rest_framework/views.py", "check_throttles"),
    ("      MeApi.get", "ingest/api_views.py", "get"),
    ("        ModelSerializer fields built per request", "rest_framework/serializers.py", "get_fields"),
    ("      SyncApi.get", "ingest/sync_views.py", "get"),
    ("        read_sync_page", "ingest/sync.py", "read_sync_page"),
    ("          _page_keys (the merge query)", "ingest/sync.py", "_page_keys"),
    ("          _fetch_rows (the row queries + dicts)", "ingest/sync.py", "_fetch_rows"),
    ("            rows one by one through Django's cursor", "django/db/backends/utils.py", "__iter__"),
    ("            the ids array rendered into the SQL", "psycopg/types/array.py", "_dump_list"),
    ("        SyncPage.as_json", "ingest/sync.py", "as_json"),
    ("    JSONRenderer.render (json.dumps; after the view, in the handler)", "rest_framework/renderers.py", "render"),
    ("  health check SELECT 1 (is_usable)", "django/db/backends/postgresql/base.py", "is_usable"),
    ("  psycopg waiting on the server (all statements)", "psycopg/connection.py", "wait"),
]


def profile(args: argparse.Namespace, token: str, expected: dict[str, int]) -> str:
    """A separate, profiled gunicorn: where a worker's time goes for /v1/me and for a full sync."""
    out = RESULTS / "profile"
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for name, mode, options in (
        ("me", "me", ["--warmup", "20", "--count", "300"]),
        (
            "sync",
            "sync",
            ["--warmup", "2", "--count", "15", "--limit", str(args.limit), "--expect", json.dumps(expected)],
        ),
    ):
        for old in out.glob("gunicorn-*.prof"):
            old.unlink()
        env = {**web_env(), "BENCH_PROFILE_DIR": str(out)}
        web = web_server(
            RESULTS / "api-gunicorn-profile-access.log",
            RESULTS / "api-gunicorn-profile.log",
            config=ROOT / "bench" / "gunicorn_profile.py",
            env=env,
        )
        try:
            web.start()
            phase = run_phase(f"profile-{name}", mode, ["--url", web.url, "--token", token, *options], web)
        finally:
            web.stop(grace=15)  # graceful: the workers dump their profiles on exit
        files = sorted(out.glob("gunicorn-*.prof"))
        if not files:
            sections.append(f"profile {name}: no profile written")
            continue
        stats = pstats.Stats(*map(str, files))
        raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
        # Per API request: DRF dispatches (gunicorn's readiness probes of /healthz are not counted).
        handled = sum(v[1] for k, v in raw.items() if k[0].endswith("rest_framework/views.py") and k[2] == "dispatch")
        handled = max(handled, 1)
        lines = [
            (
                f"Profile of {name} (cProfile, both workers; {fmt(phase.p(50), 2)} ms p50 under the profiler), "
                f"cumulative ms per request over the {handled} API requests the workers handled (warm-up "
                "included; the first requests' lazy imports too); cProfile inflates Python-heavy parts:"
            ),
            "",
        ]
        for label, suffix, function in PROFILE_BUCKETS:
            total = max((v[3] for k, v in raw.items() if k[0].endswith(suffix) and k[2] == function), default=0)
            if total:
                lines.append(f"  {fmt(1000 * total / handled, 3):>8} ms  {label}")
        listing = out / f"api-{name}-top.txt"
        with listing.open("w") as stream:
            stats.stream = stream  # type: ignore[attr-defined]
            stats.sort_stats("cumulative").print_stats(80)
            stats.sort_stats("tottime").print_stats(60)
        lines += ["", f"(full listing in {listing.relative_to(ROOT)})"]
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


# Main
# ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=5, help="users with a year of data each (default 5)")
    parser.add_argument("--me-warmup", type=int, default=50, help="warm-up /v1/me requests (default 50)")
    parser.add_argument("--me-requests", type=int, default=500, help="measured /v1/me requests (default 500)")
    parser.add_argument("--limit", type=int, default=5000, help="the sync's page size (default 5000, the maximum)")
    parser.add_argument("--sync-warmup", type=int, default=3, help="warm-up full syncs (default 3)")
    parser.add_argument("--syncs", type=int, default=20, help="measured full syncs (default 20)")
    parser.add_argument("--profile", action="store_true", help="then profile gunicorn workers serving both")
    args = parser.parse_args(argv)
    if min(args.users, args.me_warmup, args.me_requests, args.sync_warmup, args.syncs) < 1:
        parser.error("counts must be positive")
    exit_cleanly_on_signals()
    RESULTS.mkdir(parents=True, exist_ok=True)

    log(f"database {DB_NAME}: drop, create, migrate; Redis db {REDIS_DB}: flush")
    pg = recreate_database()
    migrate()
    flush_bench_redis()
    log(f"seed: {args.users} users with a year of data each, a CLI token")
    seeded = seed(args.users)
    expected = seeded["expected"]
    log(f"  {sum(expected.values()):,} rows for the measured user in {seeded['seconds']:.1f} s: {expected}")
    horizon = settle(seeded["user_id"])
    log(f"  VACUUM ANALYZE; sync horizon xmin {horizon['xmin']} > newest stamp {horizon['newest_stamp']}")

    token, user_id = seeded["token"], seeded["user_id"]
    expect = json.dumps(expected)
    connections = str(expected["terra_connections"])
    me_options = ["--warmup", str(args.me_warmup), "--count", str(args.me_requests)]
    me_options += ["--expect-connections", connections]
    sync_options = ["--warmup", str(args.sync_warmup), "--count", str(args.syncs), "--expect", expect]
    access_log, server_log = RESULTS / "api-gunicorn-access.log", RESULTS / "api-gunicorn.log"
    for path in (access_log, server_log):
        path.unlink(missing_ok=True)
    web = web_server(access_log, server_log, env=web_env())
    phases: dict[str, Phase] = {}
    try:
        log(f"gunicorn amy.wsgi on {web.url} ({WEB_WORKERS} sync workers)")
        web.start()
        client = ["--url", web.url, "--token", token]
        log(f"/v1/me: {args.me_warmup} warm-up + {args.me_requests} measured requests")
        phases["me"] = run_phase("me", "me", [*client, *me_options], web)
        log(f"  {describe(phases['me'])}")
        log(f"full sync (limit {args.limit}): {args.sync_warmup} warm-up + {args.syncs} measured")
        phases["sync"] = run_phase("sync", "sync", [*client, *sync_options, "--limit", str(args.limit)], web)
        log(f"  {describe(phases['sync'])}, {phases['sync'].summary.get('pages')} page(s)")
    finally:
        web.stop()
        with contextlib.suppress(Exception):
            flush_bench_redis()
    database = ["--database-url", DATABASE_URL, "--user-id", user_id]
    log("baseline /v1/me: bare psycopg, two SELECTs + json.dumps")
    phases["me-baseline"] = run_phase("me-baseline", "baseline-me", [*database, *me_options], None)
    log(f"  {describe(phases['me-baseline'])}")
    log("baseline sync: bare psycopg, the same SELECTs + json.dumps")
    phases["sync-baseline"] = run_phase("sync-baseline", "baseline-sync", [*database, *sync_options], None)
    log(f"  {describe(phases['sync-baseline'])}")

    text = report(args, pg, seeded, phases)
    if args.profile:
        log("profiled gunicorn: /v1/me, then full syncs")
        text += "\n" + profile(args, token, expected)
    write_results("api", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
