"""Helper processes of the API benchmark, started by bench/api.py.

    python -m bench.api_load seed          --users N                               (Django)
    python -m bench.api_load me            --url URL --token T ...                 (HTTP client)
    python -m bench.api_load sync          --url URL --token T --limit L ...       (HTTP client)
    python -m bench.api_load baseline-me   --database-url URL --user-id U ...      (bare: psycopg only)
    python -m bench.api_load baseline-sync --database-url URL --user-id U ...      (bare: psycopg only)

seed: the benchmark user and N - 1 other users, each with two active Terra connections (GARMIN,
OURA) and a year of typed rows: 365 daily summaries, 365 sleep sessions, 400 activities, 1,500 body
measurements, written day by day (one transaction per user and day, users interleaved, as webhooks
arrive, so the sync stamps are spread like production's), then one parsed lab upload with 100
biomarkers; the sync_stamp triggers stamp every row. Mints a CLI token for the benchmark user with
accounts.tokens.cli_token_issue. Prints `result <json>` (token, the user's rows per synced table).

The other modes run W warm-up operations, print `start`, run N measured operations one after the
other (concurrency 1), print `end`, wait for a line on stdin (so the caller's CPU sample still sees
their PostgreSQL backend), then print `result <json>`. HTTP requests use http.client: a new TCP
connection per request (gunicorn's sync worker closes every connection).

- me: `GET /v1/me` with the bearer token; the time is the request's wall time.
- sync: a full sync as a fresh client: `GET /v1/sync?limit=L` without a cursor, then with the
  returned cursor until `has_more` is false; the time is the sum of the pages' wall times (send to
  last byte read); parsing the JSON (needed to follow the cursor) is outside the clock. Every full
  sync must bring exactly the seeded rows (checked per table).
- baseline-me: the two SELECTs /v1/me needs (the user by id, their connections) and json.dumps
  (compact, as DRF's JSONRenderer writes).
- baseline-sync: per synced table, every column but sync_stamp of the user's rows ordered by
  (sync_stamp, id), as dicts, then json.dumps (compact) of the answer's shape (datetimes as ISO
  strings, by json.dumps' `default`).
Both baselines: one persistent psycopg connection, client-side binding (as Django's), autocommit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import random
import select
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench.common import percentile

BENCH_USER = "user_bench_api"
YEAR_START = dt.date(2025, 1, 1)
DAYS = 365
BIOMARKERS = 100
# The synced tables, in ingest/sync.py's order (SYNC_TABLES).
SYNC_TABLES = (
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
# As bench/load.py: the settings Django's connection gets (parity, not a cost); UTC like Django's.
PG_OPTIONS = (
    "-c statement_timeout=30000 -c lock_timeout=5000 -c idle_in_transaction_session_timeout=60000 -c TimeZone=UTC"
)
BODY_METRICS = (
    ("weight", "kg"),
    ("body_fat_percentage", "%"),
    ("bmi", "kg/m2"),
    ("muscle_mass", "kg"),
    ("water_percentage", "%"),
)


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# seed (Django)
# ------------------------------------------------------------------------------


def _at(day: dt.date, hour: float) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC) + dt.timedelta(hours=hour)


def _day_rows(rng: random.Random, user: Any, conns: dict[str, Any], index: int) -> dict[str, list[Any]]:
    """One user's typed rows of one day: a daily summary, a night's sleep, 1-2 activities (400 a
    year), 4-5 body measurements (1,500 a year); values in realistic ranges, rounded as wearables
    send them."""
    from ingest.models import Activity, BodyMeasurement, DailySummary, SleepSession

    day = YEAR_START + dt.timedelta(days=index)
    garmin, oura = conns["GARMIN"], conns["OURA"]
    ordering_ts = int(_at(day, 23.5).timestamp() * 1000)

    def shared(conn: Any) -> dict[str, Any]:
        return {
            "user": user,
            "provider": conn.provider,
            "terra_user_id": conn.terra_user_id,
            "ordering_ts": ordering_ts,
        }

    def r(low: float, high: float, digits: int = 1) -> float:
        return round(rng.uniform(low, high), digits)

    daily = DailySummary(
        **shared(garmin),
        date=day,
        start_time=_at(day, 0),
        end_time=_at(day, 24),
        steps=rng.randint(2000, 18000),
        distance_meters=r(1500, 14000),
        floors_climbed=float(rng.randint(0, 30)),
        elevation_gain_meters=r(0, 250),
        total_burned_calories=r(1800, 3400),
        active_calories=r(200, 1200),
        bmr_calories=r(1500, 1800),
        activity_seconds=float(rng.randint(1800, 14000)),
        low_intensity_seconds=float(rng.randint(1000, 9000)),
        moderate_intensity_seconds=float(rng.randint(0, 3600)),
        vigorous_intensity_seconds=float(rng.randint(0, 2400)),
        inactivity_seconds=float(rng.randint(30000, 60000)),
        avg_hr_bpm=r(60, 85),
        max_hr_bpm=float(rng.randint(120, 185)),
        min_hr_bpm=float(rng.randint(42, 58)),
        resting_hr_bpm=float(rng.randint(45, 65)),
        avg_hrv_rmssd=r(25, 90),
        avg_hrv_sdnn=r(30, 110),
        avg_saturation_percentage=r(94, 99),
        vo2max_ml_per_min_per_kg=r(38, 55),
        avg_stress_level=float(rng.randint(15, 60)),
        max_stress_level=float(rng.randint(60, 99)),
        recovery_score=float(rng.randint(20, 100)),
        activity_score=float(rng.randint(20, 100)),
        sleep_score=float(rng.randint(40, 95)),
    )
    bedtime = 22.0 + rng.uniform(-1.0, 1.5)
    asleep = rng.uniform(5.5, 8.5) * 3600
    sleep = SleepSession(
        **shared(oura),
        summary_id=f"{oura.terra_user_id}-sleep-{day.isoformat()}",
        start_time=_at(day, bedtime),
        end_time=_at(day, bedtime) + dt.timedelta(seconds=asleep + 1800),
        is_nap=False,
        asleep_seconds=round(asleep),
        light_seconds=round(asleep * 0.5),
        deep_seconds=round(asleep * 0.2),
        rem_seconds=round(asleep * 0.3),
        awake_seconds=1800.0,
        in_bed_seconds=round(asleep + 1800),
        sleep_latency_seconds=float(rng.randint(120, 1500)),
        wakeup_events=rng.randint(0, 6),
        efficiency=r(0.8, 0.97, 2),
        avg_hr_bpm=r(48, 62),
        min_hr_bpm=float(rng.randint(40, 50)),
        resting_hr_bpm=float(rng.randint(42, 55)),
        avg_hrv_rmssd=r(25, 95),
        avg_breaths_per_min=r(12, 17),
        avg_saturation_percentage=r(94, 99),
        temperature_delta=r(-0.6, 0.6, 2),
        readiness=float(rng.randint(50, 95)),
        sleep_score=float(rng.randint(50, 95)),
    )
    activities = []
    for n in range(2 if index % 10 == 0 and index < 350 else 1):  # 365 + 35 = 400 a year
        start = _at(day, 7 + 10 * n + rng.uniform(0, 2))
        duration = rng.uniform(1200, 5400)
        activities.append(
            Activity(
                **shared(garmin),
                summary_id=f"{30_000_000_000 + index * 10 + n}",
                name=rng.choice(["Morning Run", "Cycling", "Walk", "Strength", "Evening Run"]),
                activity_type=rng.choice([1, 8, 14, 80]),
                start_time=start,
                end_time=start + dt.timedelta(seconds=duration),
                duration_seconds=round(duration, 1),
                active_seconds=round(duration * 0.95, 1),
                distance_meters=r(1000, 25000),
                steps=rng.randint(0, 12000),
                elevation_gain_meters=r(0, 300),
                total_burned_calories=r(100, 900),
                active_calories=r(80, 800),
                avg_hr_bpm=r(100, 160),
                max_hr_bpm=float(rng.randint(140, 190)),
                avg_speed_meters_per_second=r(1.2, 9, 2),
                avg_pace_minutes_per_kilometer=r(3.5, 12, 2),
                avg_cadence_rpm=r(70, 180),
                avg_watts=r(100, 300),
                max_watts=r(300, 900),
                vo2max_ml_per_min_per_kg=r(38, 55),
                device_name="Forerunner 965",
            )
        )
    body = [
        BodyMeasurement(
            **shared(garmin),
            measured_at=_at(day, 7 + n * 0.25),
            metric=BODY_METRICS[n][0],
            value=r(10, 90, 2),
            unit=BODY_METRICS[n][1],
        )
        for n in range(5 if index % 9 == 0 and index < 360 else 4)  # 4 x 365 + 40 = 1,500 a year
    ]
    return {"daily_summary": [daily], "sleep_sessions": [sleep], "activities": activities, "body_measurements": body}


def seed(args: argparse.Namespace) -> int:
    import django

    django.setup()
    from django.db import connection, transaction

    from accounts.models import User
    from accounts.tokens import cli_token_issue
    from ingest.models import (
        WIDE_BIOMARKER_CODES,
        Activity,
        Biomarker,
        BodyMeasurement,
        DailySummary,
        LabUpload,
        LabUploadStatus,
        SleepSession,
        TerraConnection,
    )

    models = {
        "daily_summary": DailySummary,
        "sleep_sessions": SleepSession,
        "activities": Activity,
        "body_measurements": BodyMeasurement,
    }
    started = time.monotonic()
    with connection.cursor() as db:  # seeding only: commits need not wait for the WAL flush
        db.execute("SET synchronous_commit TO off")
    rng = random.Random(20250101)
    user_ids = [BENCH_USER] + [f"user_bench_api_other_{n:02d}" for n in range(1, args.users)]
    users, conns = [], []
    for n, user_id in enumerate(user_ids):
        with transaction.atomic():
            user = User.objects.create(id=user_id, email=f"bench{n}@example.com")
            mine = {
                provider: TerraConnection.objects.create(
                    user=user,
                    terra_user_id=f"{n:08x}-{k:04x}-4000-8000-bench{provider.lower():>7}",
                    provider=provider,
                    scopes="activity,body,daily,sleep",
                    last_webhook_at=_at(YEAR_START, 8),
                )
                for k, provider in enumerate(("GARMIN", "OURA"))
            }
        users.append(user)
        conns.append(mine)
    for index in range(DAYS):
        for user, mine in zip(users, conns, strict=True):
            with transaction.atomic():
                for table, rows in _day_rows(rng, user, mine, index).items():
                    models[table].objects.bulk_create(rows)
    codes = list(WIDE_BIOMARKER_CODES) + [f"marker_{n:03d}" for n in range(BIOMARKERS - len(WIDE_BIOMARKER_CODES))]
    for n, user in enumerate(users):
        with transaction.atomic():
            collected = _at(YEAR_START + dt.timedelta(days=200), 8.5)
            upload = LabUpload.objects.create(
                user=user,
                filename="annual-checkup.pdf",
                storage_key=f"labs/{user.id}/1/3f9c2a7e.pdf",
                content_type="application/pdf",
                size_bytes=482_113,
                sha256=f"{n:064x}",
                status=LabUploadStatus.PARSED,
                terra_upload_id=f"bench-upload-{n:04d}",
                terra_session_id=f"bench-session-{n:04d}",
                submitted_at=collected,
                parsed_at=collected + dt.timedelta(minutes=3),
            )
            Biomarker.objects.bulk_create(
                Biomarker(
                    user=user,
                    provider="TERRA_LAB",
                    lab_upload=upload,
                    code=code,
                    name=code.replace("_", " ").title(),
                    loinc_code=f"{1000 + i}-{i % 10}",
                    panel=["CBC", "Lipid panel", "Metabolic panel", "Thyroid", "Vitamins"][i % 5],
                    value=round(rng.uniform(0.5, 250), 2),
                    value_text=None,
                    unit=["g/dL", "mg/dL", "%", "mIU/L", "ng/mL"][i % 5],
                    reference_low=round(rng.uniform(0.1, 50), 1),
                    reference_high=round(rng.uniform(60, 300), 1),
                    flag=["normal", "normal", "normal", "high", "low"][i % 5],
                    collected_at=collected,
                )
                for i, code in enumerate(codes)
            )
    token = cli_token_issue(user=users[0]).token
    expected = {}
    with connection.cursor() as db:
        for table in SYNC_TABLES:
            db.execute(f"SELECT count(*) FROM {table} WHERE user_id = %s", [BENCH_USER])
            expected[table] = db.fetchone()[0]
        db.execute("SELECT count(*) FROM daily_summary")
        all_daily = db.fetchone()[0]
    connection.close()
    emit(
        "result "
        + json.dumps(
            {
                "user_id": BENCH_USER,
                "users": len(users),
                "token": token,
                "expected": expected,
                "all_users_daily": all_daily,
                "transactions": len(users) * (DAYS + 2),
                "seconds": time.monotonic() - started,
            }
        )
    )
    return 0


# Measured modes
# ------------------------------------------------------------------------------


class Http:
    def __init__(self, url: str, token: str):
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}", "User-Agent": "amy-bench", "Accept": "application/json"}

    def get(self, path: str, label: str) -> tuple[int, bytes, float]:
        """(status, body, seconds from sending the request to the last byte of the answer)."""
        start = time.perf_counter()
        try:
            self.conn.request("GET", path, headers={**self.headers, "x-bench-phase": label})
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            raise
        return response.status, data, time.perf_counter() - start

    def close(self) -> None:
        self.conn.close()


# One operation: returns (seconds, bytes) or raises; `label` tags measured requests (access log).
Operation = Callable[[str], tuple[float, int]]


def me_operation(args: argparse.Namespace) -> tuple[Operation, Callable[[], None]]:
    client = Http(args.url, args.token)

    def run(label: str) -> tuple[float, int]:
        status, data, seconds = client.get("/v1/me", label)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:200]!r}")
        body = json.loads(data)
        if len(body["connections"]) != args.expect_connections or body["connections_stale"]:
            raise RuntimeError(f"unexpected /v1/me answer: {data[:300]!r}")
        return seconds, len(data)

    return run, client.close


def sync_operation(args: argparse.Namespace, pages: list[int]) -> tuple[Operation, Callable[[], None]]:
    client = Http(args.url, args.token)
    expected = json.loads(args.expect)
    serial = 0

    def run(label: str) -> tuple[float, int]:
        nonlocal serial
        serial += 1
        total, size, count = 0.0, 0, 0
        received: Counter[str] = Counter()
        cursor = None
        while True:
            query = {"limit": str(args.limit), **({"cursor": cursor} if cursor else {})}
            status, data, seconds = client.get(f"/v1/sync?{urlencode(query)}", f"{label}.{serial}")
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {data[:200]!r}")
            total += seconds
            size += len(data)
            count += 1
            page = json.loads(data)  # outside the clock
            for table, rows in page["tables"].items():
                received[table] += len(rows)
            if any(page["deleted"].values()):
                raise RuntimeError(f"unexpected deletions: {page['deleted']}")
            cursor = page["cursor"]
            if not page["has_more"]:
                break
            if count > 1000:
                raise RuntimeError("more than 1000 pages: the cursor does not advance")
        got = {table: received.get(table, 0) for table in expected}
        if got != expected:
            raise RuntimeError(f"full sync brought {got}, expected {expected}")
        pages.append(count)
        return total, size

    return run, client.close


def _pg_connect(url: str) -> Any:
    import psycopg

    # Django's psycopg backend uses client-side binding (ClientCursor) unless told otherwise.
    return psycopg.connect(url, autocommit=True, cursor_factory=psycopg.ClientCursor, options=PG_OPTIONS)


def _iso(value: Any) -> str:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def baseline_me_operation(args: argparse.Namespace) -> tuple[Operation, Callable[[], None]]:
    conn = _pg_connect(args.database_url)
    cursor = conn.cursor()
    user_sql = "SELECT id, email, created_at FROM users WHERE id = %s"
    connections_sql = (
        "SELECT id, terra_user_id, provider, status, connected_at, last_webhook_at FROM terra_connections "
        "WHERE user_id = %s ORDER BY connected_at, id"
    )

    def run(_label: str) -> tuple[float, int]:
        start = time.perf_counter()
        cursor.execute(user_sql, [args.user_id])
        user = dict(zip(("id", "email", "created_at"), cursor.fetchone(), strict=True))
        cursor.execute(connections_sql, [args.user_id])
        columns = [c.name for c in cursor.description]
        connections = [dict(zip(columns, row, strict=True)) for row in cursor]
        data = json.dumps(
            {"user": user, "connections": connections, "connections_stale": False}, separators=(",", ":"), default=_iso
        )
        encoded = data.encode()
        seconds = time.perf_counter() - start
        if len(connections) != args.expect_connections:
            raise RuntimeError(f"{len(connections)} connections, expected {args.expect_connections}")
        return seconds, len(encoded)

    return run, conn.close


def baseline_sync_operation(args: argparse.Namespace) -> tuple[Operation, Callable[[], None]]:
    conn = _pg_connect(args.database_url)
    cursor = conn.cursor()
    expected = json.loads(args.expect)
    statements = {}
    for table in SYNC_TABLES:
        cursor.execute(f"SELECT * FROM {table} LIMIT 0")
        columns = [c.name for c in cursor.description if c.name != "sync_stamp"]
        select_list = ", ".join(columns)
        sql = f"SELECT {select_list} FROM {table} WHERE user_id = %s ORDER BY sync_stamp, id"
        statements[table] = (sql, columns)

    def run(_label: str) -> tuple[float, int]:
        start = time.perf_counter()
        tables = {}
        for table, (sql, columns) in statements.items():
            cursor.execute(sql, [args.user_id])
            tables[table] = [dict(zip(columns, row, strict=True)) for row in cursor]
        body = {"tables": tables, "deleted": {t: [] for t in SYNC_TABLES}, "cursor": "", "has_more": False}
        encoded = json.dumps(body, separators=(",", ":"), default=_iso).encode()
        seconds = time.perf_counter() - start
        got = {t: len(tables[t]) for t in expected}
        if got != expected:
            raise RuntimeError(f"baseline read {got}, expected {expected}")
        return seconds, len(encoded)

    return run, conn.close


def measure(args: argparse.Namespace) -> int:
    pages: list[int] = []
    try:
        if args.mode == "me":
            run, close = me_operation(args)
        elif args.mode == "sync":
            run, close = sync_operation(args, pages)
        elif args.mode == "baseline-me":
            run, close = baseline_me_operation(args)
        else:
            run, close = baseline_sync_operation(args)
        for _ in range(args.warmup):
            run("warmup")
    except Exception as exc:
        emit("result " + json.dumps({"setup_error": f"{type(exc).__name__}: {exc}"}))
        return 1
    times, sizes = [], []
    errors: Counter[str] = Counter()
    first_error = None
    cpu_start = time.process_time()
    emit("start")
    started = time.perf_counter()
    for _ in range(args.count):
        try:
            seconds, size = run(args.label)
        except Exception as exc:
            errors[type(exc).__name__] += 1
            first_error = first_error or f"{type(exc).__name__}: {exc}"[:500]
            time.sleep(0.01)
            continue
        times.append(seconds)
        sizes.append(size)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_start
    emit("end")
    readable, _, _ = select.select([sys.stdin], [], [], 15)
    if readable:
        sys.stdin.readline()
    close()
    times.sort()

    def ms(value: float | None) -> float | None:
        return None if value is None else value * 1000

    emit(
        "result "
        + json.dumps(
            {
                "mode": args.mode,
                "count": args.count,
                "ok": len(times),
                "errors": sum(errors.values()),
                "error_kinds": dict(errors.most_common(5)),
                "first_error": first_error,
                "wall_seconds": wall,
                "process_cpu_seconds": cpu,
                "p50_ms": ms(percentile(times, 50)),
                "p99_ms": ms(percentile(times, 99)),
                "min_ms": ms(times[0] if times else None),
                "max_ms": ms(times[-1] if times else None),
                "mean_ms": ms(sum(times) / len(times) if times else None),
                "bytes": sizes[0] if sizes else None,
                "pages": pages[0] if pages else None,
            }
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["seed", "me", "sync", "baseline-me", "baseline-sync"])
    parser.add_argument("--users", type=int, default=5, help="seed: users with a year of data each")
    parser.add_argument("--url")
    parser.add_argument("--token")
    parser.add_argument("--database-url")
    parser.add_argument("--user-id", default=BENCH_USER)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--limit", type=int, default=5000)
    parser.add_argument("--label", default="measured", help="x-bench-phase header of measured requests")
    parser.add_argument("--expect", default="{}", help="sync modes: JSON {table: rows} every full sync must bring")
    parser.add_argument("--expect-connections", type=int, default=2)
    args = parser.parse_args(argv)
    if args.mode == "seed":
        return seed(args)
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
