"""Helper processes of the normalize benchmark, started by bench/normalize.py.

    python -m bench.normalize_load prepare  --count N --warmup W --plan PATH   (Django)
    python -m bench.normalize_load publish  --plan PATH                        (Django)
    python -m bench.normalize_load baseline --plan PATH --database-url URL     (bare: psycopg only)

prepare: U users, each with active Terra connections of their own (one per Terra user id of the
samples), then W warm-up and N measured ledger rows (state received) inserted with raw_event_insert
in one transaction: a daily, sleep, activity or body sample in turn, user after user, each body
distinct. `--updates K`: each user's day (its daily row, its sleep and activity summary ids) comes
in K versions with other values, newest last by x-terra-ordering-timestamp; `--shared-body-times`:
a day's body versions measure at the same times (they update the same rows) instead of distinct
ones. It also parses every measured payload with the same pure parsers and builds the very
statements the writer (ingest/services/typed_rows.py) would run for it, event by event; the plan
(ids and statements) is pickled for the other two modes. Prints `result <json>`.

publish: every row nudged once, through the webhook's own publish path (ingest.publish
publish_after_commit, run at once outside a transaction: coalesced while a nudge waits). Reads
commands on stdin: `warmup` nudges the warm-up ids, `go` the measured ones; answers
`published <n> <seconds>` for each.

baseline: no Django, no Celery: one psycopg connection, per event BEGIN, the writer's upserts,
UPDATE raw_events ... processed, COMMIT. Prints `start` and `end` around the loop (the caller
samples CPU counters), waits for a line on stdin (so its backend outlives the sample), then
`result <json>`.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import pickle
import re
import select
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "terra"
EVENT_TYPES = ("daily", "sleep", "activity", "body")
USER_ID = "user_bench_normalize"
# x-terra-ordering-timestamp-like (milliseconds since the epoch), one per event.
ORDERING_TS_BASE = 1_795_000_000_000
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
# As bench/load.py (the settings Django's connection gets): parity, not a cost.
PG_OPTIONS = "-c statement_timeout=30000 -c lock_timeout=5000 -c idle_in_transaction_session_timeout=60000"


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# Bodies
# ------------------------------------------------------------------------------


def _shift_times(value: Any, days: int) -> Any:
    """Every ISO timestamp in the structure moved by `days` days, written back in the same form."""
    if isinstance(value, dict):
        return {k: _shift_times(v, days) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift_times(v, days) for v in value]
    if isinstance(value, str) and _ISO_TIME.match(value):
        moved = dt.datetime.fromisoformat(value) + dt.timedelta(days=days)
        return moved.isoformat(timespec="microseconds")
    return value


def _versioned(body: dict[str, Any], event_type: str, version: int) -> None:
    """Other values for another version of the same records (so that an update changes a row)."""
    for item in body["data"]:
        if event_type == "daily":
            item["distance_data"]["steps"] = 10_000 + version
        elif event_type == "sleep":
            item["sleep_durations_data"]["asleep"]["duration_asleep_state_seconds"] = 24_000 + version
        elif event_type == "activity":
            item["calories_data"]["total_burned_calories"] = 600.0 + version
        elif event_type == "body":
            for measurement in item["measurements_data"]["measurements"]:
                measurement["weight_kg"] = 70.0 + version / 10


def distinct_body(
    template: dict[str, Any],
    event_type: str,
    serial: int,
    *,
    user: int = 0,
    version: int = 0,
    body_serial: int | None = None,
) -> dict[str, Any]:
    """The sample for `user`, with its times moved by `serial` days (a new daily date and new body
    measurement times, or `body_serial` days for body times) and, for sleep and activity, a
    summary_id of that user and day: version `version` of those records."""
    days = body_serial if event_type == "body" and body_serial is not None else serial
    body = _shift_times(copy.deepcopy(template), days)
    body["user"]["user_id"] = terra_user_id_of(template["user"]["user_id"], user)
    for item in body["data"]:
        metadata = item["metadata"]
        if event_type == "activity":
            metadata["summary_id"] = 30_000_000_000 + user * 100_000 + serial  # a JSON number, as Garmin sends it
        elif event_type == "sleep":
            metadata["summary_id"] = f"bench-sleep-{user:04d}-{serial:08d}-4000-8000-000000000000"
    _versioned(body, event_type, version)
    return body


def terra_user_id_of(sample_terra_user_id: str, user: int) -> str:
    return sample_terra_user_id if user == 0 else f"{sample_terra_user_id[:-5]}{user:05d}"


def user_id_of(user: int) -> str:
    return USER_ID if user == 0 else f"{USER_ID}_{user:05d}"


# prepare (Django)
# ------------------------------------------------------------------------------


def writer_statements(
    parsed: Any, *, user_id: str, provider: str, terra_user_id: str, raw_event_id: int, ordering_ts: int
) -> list[tuple[str, str, list[Any], int]]:
    """The (table, sql, params, row count) statements typed_rows_write runs for these parsed rows, built the way
    it builds them (one upsert per table, last copy of a key wins)."""
    from collections import defaultdict

    from ingest.services.typed_rows import upsert_statement

    shared = {
        "user_id": user_id,
        "provider": provider,
        "terra_user_id": terra_user_id,
        "raw_event_id": raw_event_id,
        "ordering_ts": ordering_ts,
    }
    grouped: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for model, values in parsed.rows:
        grouped[model].append({**shared, **values})
    statements = []
    for model, rows in grouped.items():
        by_key = {tuple(row[n if n in row else f"{n}_id"] for n in model.NATURAL_KEY): row for row in rows}
        unique_rows = list(by_key.values())
        field_names = sorted({name for row in unique_rows for name in row})
        sql, params = upsert_statement(model, field_names, unique_rows)
        statements.append((model._meta.db_table, sql, params, len(unique_rows)))
    if parsed.deletions:
        raise ValueError("the benchmark's bodies must not carry deletions")
    return statements


def prepare(args: argparse.Namespace) -> int:
    import django

    django.setup()
    from django.db import transaction

    from accounts.models import User
    from ingest.classify import classify
    from ingest.models import ConnectionStatus, TerraConnection
    from ingest.normalizers import activity, body, daily, sleep
    from ingest.services.webhook import DeliveryHeaders, dedup_key_for, raw_event_insert

    parsers = {"daily": daily.parse, "sleep": sleep.parse, "activity": activity.parse, "body": body.parse}
    templates = {name: json.loads((FIXTURES / f"{name}.json").read_text()) for name in EVENT_TYPES}
    started = time.monotonic()

    connections = {}
    for n in range(args.users):
        user, _ = User.objects.get_or_create(id=user_id_of(n))
        for template in templates.values():
            terra_user_id = terra_user_id_of(template["user"]["user_id"], n)
            connections[terra_user_id], _ = TerraConnection.objects.get_or_create(
                terra_user_id=terra_user_id,
                defaults={"user": user, "provider": template["user"]["provider"], "status": ConnectionStatus.ACTIVE},
            )

    total = args.warmup + args.count
    warmup_ids: list[int] = []
    ids: list[int] = []
    plan: list[tuple[int, list[tuple[str, list[Any]]]]] = []
    types: Counter[str] = Counter()
    expected_rows: Counter[str] = Counter()
    body_bytes = 0
    with transaction.atomic():
        for i in range(total):
            event_type = EVENT_TYPES[i % len(EVENT_TYPES)]
            if i < args.warmup:
                # Warm-up events go back in time, measured ones forward: no natural key is shared.
                payload = distinct_body(templates[event_type], event_type, -(i // len(EVENT_TYPES)) - 1)
            else:
                # One event of each type per user in turn, user after user; then the next version
                # of that user-day, `updates` versions per day.
                m = i - args.warmup
                user = (m // len(EVENT_TYPES)) % args.users
                round_ = m // (len(EVENT_TYPES) * args.users)
                day, version = divmod(round_, args.updates)
                body_day = day if args.shared_body_times else round_
                payload = distinct_body(
                    templates[event_type], event_type, day, user=user, version=version, body_serial=body_day
                )
            text = json.dumps(payload, separators=(",", ":"))
            classification = classify(payload)
            ordering_ts = ORDERING_TS_BASE + i
            raw_event_id = raw_event_insert(
                body_text=text,
                dedup_key=dedup_key_for(text.encode()),
                classification=classification,
                request_id=f"req_bench_normalize_{i:08d}",
                headers=DeliveryHeaders(ordering_ts=ordering_ts),
            )
            if raw_event_id is None:
                raise RuntimeError(f"event {i} was a duplicate: the bodies are not distinct")
            if i < args.warmup:
                warmup_ids.append(raw_event_id)
                continue
            ids.append(raw_event_id)
            types[event_type] += 1
            body_bytes += len(text)
            # The baseline's work, computed here so that parsing stays outside its timing.
            parsed = parsers[event_type](json.loads(text))
            owner = connections[classification.terra_user_id]
            statements = writer_statements(
                parsed,
                user_id=owner.user_id,
                provider=classification.provider or owner.provider,
                terra_user_id=classification.terra_user_id,
                raw_event_id=raw_event_id,
                ordering_ts=ordering_ts,
            )
            for table, _, _, rows in statements:
                expected_rows[table] += rows
            plan.append((raw_event_id, [(sql, params) for _, sql, params, _ in statements]))
    Path(args.plan).write_bytes(
        pickle.dumps({"warmup_ids": warmup_ids, "ids": ids, "plan": plan}, protocol=pickle.HIGHEST_PROTOCOL)
    )
    emit(
        "result "
        + json.dumps(
            {
                "events": len(ids),
                "warmup_events": len(warmup_ids),
                "types": dict(types),
                "connections": len(connections),
                "expected_rows": dict(expected_rows),
                "mean_body_bytes": body_bytes / max(1, len(ids)),
                "seconds": time.monotonic() - started,
            }
        )
    )
    return 0


# publish (Django)
# ------------------------------------------------------------------------------


def publish(args: argparse.Namespace) -> int:
    import django

    django.setup()
    from amy.celery import app as celery_app
    from ingest.publish import publish_after_commit

    data = pickle.loads(Path(args.plan).read_bytes())  # noqa: S301 - our own file, written by prepare
    # Open the broker connection now, not inside the measured window.
    with celery_app.producer_or_acquire() as producer:
        producer.connection.ensure_connection(max_retries=3)
    emit("ready")
    for line in sys.stdin:
        command = line.strip()
        if command in ("warmup", "go"):
            started = time.perf_counter()
            ids = data["warmup_ids" if command == "warmup" else "ids"]
            for raw_event_id in ids:
                publish_after_commit(raw_event_id, None)  # as the webhook, once its row is stored
            sent = len(ids)
            emit(f"published {sent} {time.perf_counter() - started:.4f}")
        elif command == "quit":
            break
    return 0


# baseline (bare)
# ------------------------------------------------------------------------------


def baseline(args: argparse.Namespace) -> int:
    import psycopg

    data = pickle.loads(Path(args.plan).read_bytes())  # noqa: S301 - our own file, written by prepare
    plan = data["plan"]
    # Django's psycopg backend binds parameters client-side (ClientCursor) unless told otherwise,
    # and runs atomic() as BEGIN ... COMMIT on an autocommit connection: the same here.
    conn = psycopg.connect(args.database_url, autocommit=True, cursor_factory=psycopg.ClientCursor, options=PG_OPTIONS)
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    cursor.fetchall()
    mark = "UPDATE raw_events SET state = 'processed', processed_at = now() WHERE id = %s"
    inserted = 0
    emit("start")
    started = time.perf_counter()
    cpu_started = time.process_time()
    for raw_event_id, statements in plan:
        cursor.execute("BEGIN")
        for statement, params in statements:
            cursor.execute(statement, params)
            inserted += sum(1 for (new,) in cursor.fetchall() if new)
        cursor.execute(mark, [raw_event_id])
        cursor.execute("COMMIT")
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    emit("end")
    readable, _, _ = select.select([sys.stdin], [], [], 15)
    if readable:
        sys.stdin.readline()
    conn.close()
    emit(
        "result "
        + json.dumps(
            {
                "events": len(plan),
                "seconds": elapsed,
                "per_second": len(plan) / elapsed if elapsed else None,
                "rows_inserted": inserted,
                "process_cpu_seconds": cpu,
            }
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["prepare", "publish", "baseline"])
    parser.add_argument("--plan", required=True, help="the pickled plan (written by prepare)")
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--users", type=int, default=1)
    parser.add_argument("--updates", type=int, default=1, help="versions of each user-day")
    parser.add_argument("--shared-body-times", action="store_true", help="a day's body versions update the same rows")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    args = parser.parse_args(argv)
    return {"prepare": prepare, "publish": publish, "baseline": baseline}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
