"""Benchmark of the operator console (the Django admin at /console/) on a big ledger.

Run it with `python -m bench.console` (`bench/run console`). The goal: every console page measured
(the raw-events changelist and its searches, the home page with the pipeline at a glance, a
dead-letter group, its dry run and its confirmation page, a raw event's page) answers with a time
to first byte p99 <= 300 ms on a 1,000,000-row ledger.

Data, seeded with SQL (generate_series, one statement per table) into its own database
(BENCH_DATABASE, default amy_bench_console; dropped, created and migrated first): N raw_events rows
(default 1,000,000) over 90 days, of several thousand Terra users (each with an API user and a
connection) with a skewed share (the busiest has over 1 % of the ledger), the event types in a
webhook-like mix, states mostly processed with some thousands dead, a thousand parked, skipped
informational events and a few hundred queued, 0.5 % imported; payloads of about 3.5 kB of Terra-shaped JSON
(compressible: stored compressed inline). A quarter of the last day's processed rows are then made
dead of six errors that differ in ids, numbers and quoted values (the home page's and the
dead-letter groups' share of work). Then trace_events rows (the journeys of the newest
events), then VACUUM ANALYZE.

Web: gunicorn (amy.wsgi, 2 sync workers, as in production), a staff superuser and a session made
for it directly (the session cookie of a logged-in operator). One client at concurrency 1, a new TCP
connection per request; per page W warm-up requests, then N measured ones. TTFB = from the start
of the connection to the first byte of the answer; total = to the last byte. Every answer must be
200 and show the page's rows.

Baseline, in the same run: one bare psycopg connection (no Django, no HTTP) running, per page, a
SELECT of the rows and columns the page shows (the same filter, order, offset and limit).

Diagnostics: a Django process renders each page once through the test client and records its SQL
(count, time, the slowest statement and its EXPLAIN ANALYZE), so a slow page says why.

The report goes to stdout and to bench/results/console.md; the goal line is informational and
never fails the run.
"""

from __future__ import annotations

import os

# Its own database unless told otherwise: bench.common reads BENCH_DATABASE when imported.
os.environ.setdefault("BENCH_DATABASE", "amy_bench_console")

import argparse
import datetime as dt
import json
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import psycopg

from bench.common import (
    DATABASE_URL,
    DB_NAME,
    RESULTS,
    WEB_WORKERS,
    django_helper,
    exit_cleanly_on_signals,
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

GOAL_TTFB_MS = 300.0
GOAL_TEXT = f"goal: every console page on a 1,000,000-row ledger, time to first byte p99 <= {GOAL_TTFB_MS:g} ms"
STAFF_USERNAME = "bench-operator"
CHANGELIST = "/console/ingest/rawevent/"
HOME = "/console/"
GROUPS = "/console/pipeline/dead-letters/"
TRACES = "/console/admin_ops/traceevent/"
PER_PAGE = 100  # RawEventAdmin.list_per_page and TraceEventAdmin.list_per_page

# The changelist's columns (list_display), without the payload.
LIST_COLUMNS = "id, event_type, state, provider, terra_user_id, received_at, attempts, replay_count, process_error"
TRACE_COLUMNS = "id, ts, level, event, request_id, user_id, raw_event_id, duration_ms, message"


# Seed
# ------------------------------------------------------------------------------

_SEED_USERS = """
INSERT INTO users (id, email, created_at)
SELECT 'user_' || lpad(g::text, 5, '0'), 'user' || g || '@example.com', now() - interval '120 days'
FROM generate_series(0, %(users)s - 1) AS g
"""

_SEED_CONNECTIONS = """
INSERT INTO terra_connections (user_id, terra_user_id, provider, scopes, status, connected_at, last_webhook_at)
SELECT 'user_' || lpad(g::text, 5, '0'), md5('tu' || g)::uuid::text,
       (ARRAY['GARMIN', 'OURA', 'WHOOP', 'FITBIT', 'APPLE', 'POLAR'])[1 + g %% 6], 'activity,sleep,daily',
       CASE WHEN g %% 50 = 0 THEN 'revoked' ELSE 'active' END, now() - interval '120 days', now()
FROM generate_series(0, %(users)s - 1) AS g
"""

# One row per g, ids in g order (the plan is a scan of generate_series: no sort of the payloads). u = power(random(), 2) * users: a skewed share per Terra user
# (the busiest has ~1.4 %% of the ledger, half the users under 0.01 %). The payload repeats a
# Terra-shaped record ten times (about 3.5 kB), varied by g so no two bodies are equal.
_SEED_RAW_EVENTS = """
INSERT INTO raw_events (
    event_type, terra_user_id, reference_id, provider, payload, signature_verified, dedup_key, request_id,
    trace_id, terra_reference, ordering_ts, source, parent_id, user_id, import_id, received_at, queued_at,
    state, attempts, lease_until, processed_at, process_error, dead_lettered_at, replay_count,
    last_replayed_at, last_replayed_by
)
SELECT
    t.event_type, t.terra_user_id, '', t.provider,
    '{"type":"' || t.event_type || '","user":{"user_id":"' || t.terra_user_id || '","provider":"' || t.provider
        || '","reference_id":null,"scopes":"activity,sleep,daily","last_webhook_update":null},"data":['
        || repeat(
            '{"metadata":{"start_time":"' || to_char(t.received_at, 'YYYY-MM-DD') || 'T00:00:00+00:00",'
            || '"end_time":"' || to_char(t.received_at, 'YYYY-MM-DD') || 'T23:59:59+00:00","upload_type":1},'
            || '"distance_data":{"steps":' || (t.g %% 20000) || ',"distance_meters":' || (t.g %% 15000) || '.5,'
            || '"floors_climbed":' || (t.g %% 30) || ',"elevation":{"gain_actual_meters":' || (t.g %% 400) || '}},'
            || '"heart_rate_data":{"summary":{"avg_hr_bpm":' || (50 + t.g %% 40) || ',"max_hr_bpm":'
            || (120 + t.g %% 60) || ',"resting_hr_bpm":' || (45 + t.g %% 20) || ',"avg_hrv_rmssd":'
            || (t.g %% 90) || '.25}},"calories_data":{"total_burned_calories":' || (1500 + t.g %% 2000)
            || ',"net_activity_calories":' || (t.g %% 900) || '},"oxygen_data":{"avg_saturation_percentage":'
            || (90 + t.g %% 10) || '},"stress_data":{"avg_stress_level":' || (t.g %% 100) || '}},',
            10)
        || '{}]}',
    true, md5('d' || t.g) || md5('e' || t.g), 'req_' || upper(substr(md5('r' || t.g), 1, 26)),
    NULL, NULL, extract(epoch FROM t.received_at)::bigint * 1000,
    CASE WHEN t.g %% 200 = 7 THEN 'import' ELSE 'webhook' END, NULL,
    CASE WHEN t.state IN ('processed', 'skipped') THEN t.user_id END, NULL,
    t.received_at, t.received_at,
    t.state,
    CASE t.state WHEN 'dead' THEN 6 WHEN 'received' THEN 0 ELSE 1 END,
    CASE WHEN t.state = 'processing' THEN now() + interval '5 minutes' END,
    CASE WHEN t.state IN ('processed', 'skipped') THEN t.received_at + interval '2 seconds' END,
    CASE t.state
        WHEN 'dead' THEN CASE WHEN t.g %% 3 = 0 THEN 'bad_data: data[0].metadata.start_time is missing'
                              ELSE 'retries_exhausted: OperationalError: could not connect to server: '
                                   || 'Connection refused (attempt ' || (t.g %% 7) || ')' END
        WHEN 'skipped' THEN 'skipped:' || t.event_type
    END,
    CASE WHEN t.state = 'dead' THEN t.received_at + interval '31 minutes' END,
    CASE WHEN t.state = 'dead' AND t.g %% 10 = 0 THEN 1 ELSE 0 END,
    NULL, NULL
FROM (
    SELECT
        s.g,
        md5('tu' || s.u)::uuid::text AS terra_user_id,
        'user_' || lpad(s.u::text, 5, '0') AS user_id,
        (ARRAY['GARMIN', 'OURA', 'WHOOP', 'FITBIT', 'APPLE', 'POLAR'])[1 + s.u %% 6] AS provider,
        now() - interval '90 days' + (interval '90 days' * s.g / %(rows)s) AS received_at,
        CASE
            WHEN s.r_type < 0.35 THEN 'daily' WHEN s.r_type < 0.50 THEN 'sleep'
            WHEN s.r_type < 0.65 THEN 'activity' WHEN s.r_type < 0.85 THEN 'body'
            WHEN s.r_type < 0.90 THEN 'nutrition' WHEN s.r_type < 0.92 THEN 'menstruation'
            WHEN s.r_type < 0.94 THEN 'athlete' WHEN s.r_type < 0.96 THEN 'auth'
            WHEN s.r_type < 0.98 THEN 'healthcheck' WHEN s.r_type < 0.99 THEN 'lab_report'
            ELSE 'permission_change'
        END AS event_type,
        CASE
            WHEN s.g > %(rows)s - 150 THEN 'received'
            WHEN s.g > %(rows)s - 200 THEN 'processing'
            WHEN s.r_state < 0.005 THEN 'dead'
            WHEN s.r_state < 0.006 THEN 'parked'
            WHEN s.r_type >= 0.96 AND s.r_type < 0.98 THEN 'skipped'
            ELSE 'processed'
        END AS state
    FROM (
        SELECT g, floor(%(users)s * power(random(), 2))::int AS u, random() AS r_type, random() AS r_state
        FROM generate_series(1, %(rows)s) AS g
    ) AS s
) AS t
"""

# The last day's dead letters: a quarter of the processed rows received in the last 24 hours die of
# one of six errors, each naming varying ids, numbers or quoted values (folded into six groups).
_SEED_RECENT_DEAD = """
UPDATE raw_events
SET state = 'dead', attempts = 6, processed_at = NULL,
    dead_lettered_at = received_at + interval '1 minute',
    process_error = CASE id %% 6
        WHEN 0 THEN 'bad_data: data[' || (id %% 9) || '].metadata.start_time is missing'
        WHEN 1 THEN 'retries_exhausted: OperationalError: could not connect to server (attempt ' || (id %% 7) || ')'
        WHEN 2 THEN 'bad_data: unknown provider ' || quote_literal(provider)
        WHEN 3 THEN 'parked_timeout: no connection for ' || terra_user_id
        WHEN 4 THEN 'retries_exhausted: TerraApiError: 503 from /v2/daily after ' || (id %% 30) || '.5 s'
        ELSE 'bad_data: lab upload req_' || upper(substr(md5(id::text), 1, 26)) || ' not found'
    END
WHERE received_at >= now() - interval '24 hours' AND state = 'processed' AND id %% 4 = 0
"""

# The journeys of the newest events: webhook_start / webhook_complete / normalize_start /
# normalize_complete, one event per four rows, over the last days.
_SEED_TRACES = """
INSERT INTO trace_events (
    ts, request_id, user_id, terra_user_id, raw_event_id, level, event, message, data, duration_ms,
    error_name, error_stack
)
SELECT
    r.received_at + (k.n * interval '400 milliseconds'), r.request_id, NULL,
    CASE WHEN k.n >= 2 THEN r.terra_user_id END,
    CASE WHEN k.n = 0 THEN NULL ELSE r.id END,
    CASE WHEN k.n = 3 AND r.state = 'dead' THEN 'error' ELSE 'info' END,
    (ARRAY['webhook_start', 'webhook_complete', 'normalize_start', 'normalize_complete'])[1 + k.n],
    (ARRAY['webhook_start', 'webhook_complete', 'normalize_start', 'normalize_complete'])[1 + k.n],
    CASE k.n WHEN 1 THEN jsonb_build_object('type', r.event_type, 'duplicate', false)
             WHEN 3 THEN jsonb_build_object('attempts', r.attempts, 'outcome', r.state)
             ELSE '{}'::jsonb END,
    CASE WHEN k.n IN (1, 3) THEN 2.5 + (r.id %% 100) / 10.0 END,
    NULL, NULL
FROM (SELECT * FROM raw_events ORDER BY id DESC LIMIT %(events)s) AS r
CROSS JOIN generate_series(0, 3) AS k(n)
ORDER BY r.id, k.n
"""


@dataclass
class Seeded:
    rows: int
    users: int
    traces: int
    seconds: dict[str, float]
    sizes: dict[str, str]
    states: dict[str, int]
    busiest: tuple[str, int]
    typical: tuple[str, int]
    dead_id: int
    middle_id: int
    request_id: str
    recent_dead_id: int = 0
    groups: list[dict[str, Any]] = field(default_factory=list)


def _secondary_indexes(conn: psycopg.Connection, table: str) -> tuple[list[str], list[str]]:
    """(drop, create) statements of the table's indexes and unique constraints but its primary key,
    as the migrations made them (pg_get_indexdef / pg_get_constraintdef)."""
    constraints = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'u'",
        [table],
    ).fetchall()
    indexes = conn.execute(
        "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = %s::regclass AND NOT x.indisprimary "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)",
        [table],
    ).fetchall()
    drop = [f'ALTER TABLE {table} DROP CONSTRAINT "{name}"' for name, _ in constraints]
    drop += [f'DROP INDEX "{name}"' for name, _ in indexes]
    create = [f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}' for name, definition in constraints]
    create += [definition for _, definition in indexes]
    return drop, create


def seed(rows: int, users: int, traces: int) -> Seeded:
    seconds: dict[str, float] = {}
    with psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute("SELECT setseed(0.42)")
        params = {"rows": rows, "users": users, "events": traces // 4}
        # As pg_restore does: the ledger's secondary indexes are built after the load (a sort each)
        # rather than maintained row by row; the same definitions, so the schema is the migrated one.
        drop, create = _secondary_indexes(conn, "raw_events")
        for statement in drop:
            conn.execute(statement)  # type: ignore[arg-type]
        for name, statement in (
            ("users", _SEED_USERS),
            ("terra_connections", _SEED_CONNECTIONS),
            ("raw_events", _SEED_RAW_EVENTS),
        ):
            started = time.monotonic()
            conn.execute(statement, params)  # type: ignore[arg-type]
            seconds[name] = time.monotonic() - started
            log(f"  {name}: {seconds[name]:.1f} s")
        started = time.monotonic()
        conn.execute(_SEED_RECENT_DEAD, params)  # type: ignore[arg-type]
        seconds["last day's dead letters"] = time.monotonic() - started
        started = time.monotonic()
        for statement in create:
            conn.execute(statement)  # type: ignore[arg-type]
        seconds["raw_events indexes"] = time.monotonic() - started
        log(f"  raw_events indexes ({len(create)}): {seconds['raw_events indexes']:.1f} s")
        started = time.monotonic()
        conn.execute(_SEED_TRACES, params)  # type: ignore[arg-type]
        seconds["trace_events"] = time.monotonic() - started
        log(f"  trace_events: {seconds['trace_events']:.1f} s")
        started = time.monotonic()
        conn.execute("VACUUM (ANALYZE) raw_events, trace_events, users, terra_connections")
        seconds["vacuum analyze"] = time.monotonic() - started
        log(f"  VACUUM ANALYZE: {seconds['vacuum analyze']:.1f} s")
        sizes = {}
        for table in ("raw_events", "trace_events"):
            row = conn.execute(
                "SELECT pg_size_pretty(pg_table_size(%s)), pg_size_pretty(pg_indexes_size(%s))", [table, table]
            ).fetchone()
            assert row is not None
            sizes[table] = f"{row[0]} table + {row[1]} indexes"
        states = dict(conn.execute("SELECT state, count(*) FROM raw_events GROUP BY state ORDER BY 2 DESC").fetchall())
        by_user = conn.execute(
            "SELECT terra_user_id, count(*) FROM raw_events GROUP BY terra_user_id ORDER BY 2 DESC"
        ).fetchall()
        ids = conn.execute(
            "SELECT (SELECT max(id) FROM raw_events WHERE state = 'dead'), (SELECT max(id) / 2 FROM raw_events)"
        ).fetchone()
        assert ids is not None
        request_row = conn.execute("SELECT request_id FROM raw_events WHERE id = %s", [ids[1]]).fetchone()
        assert request_row is not None
        trace_count = conn.execute("SELECT count(*) FROM trace_events").fetchone()
    return Seeded(
        rows=rows,
        users=users,
        traces=int(trace_count[0]) if trace_count else 0,
        seconds=seconds,
        sizes=sizes,
        states=states,
        busiest=(by_user[0][0], by_user[0][1]),
        typical=(by_user[len(by_user) // 2][0], by_user[len(by_user) // 2][1]),
        dead_id=ids[0],
        middle_id=ids[1],
        request_id=request_row[0],
    )


# The operator: a staff superuser and its session, made in a Django process
# ------------------------------------------------------------------------------


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "amy.settings")
    import django

    django.setup()


def _staff_session() -> dict[str, str]:
    """In a Django process: the superuser and a session logged in as it (what the login form makes)."""
    _django()
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model

    user = get_user_model().objects.create_superuser(STAFF_USERNAME, "operator@example.com", "bench-not-used")
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return {"cookie": f"{settings.SESSION_COOKIE_NAME}={session.session_key}"}


NEW_INDEX = "raw_events_terra_user_idx"


def _explain(cursor: Any, sql: str) -> tuple[list[str], float]:
    cursor.execute("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) " + sql)
    plan = [row[0] for row in cursor.fetchall()]
    executed = [line for line in plan if line.startswith("Execution Time:")]
    return plan, float(executed[0].split()[2]) if executed else 0.0


def _queries(paths: list[str]) -> list[dict[str, Any]]:
    """In a Django process: each page once through the test client, with its SQL, and the plan of
    its list query (the one that reads the page's rows) under EXPLAIN ANALYZE; when that plan uses
    the terra_user_id index, the same query's time without it (dropped in a rolled-back transaction)."""
    _django()
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(get_user_model().objects.get(username=STAFF_USERNAME))
    out = []
    for path in paths:
        client.get(path)  # warm: the first render compiles templates and loads the filters' choices
        started = time.perf_counter()
        with CaptureQueriesContext(connection) as captured:
            response = client.get(path)
        wall = (time.perf_counter() - started) * 1000
        queries = [(float(q["time"]) * 1000, q["sql"]) for q in captured.captured_queries]
        listing = [
            sql
            for _, sql in queries
            if sql.startswith("SELECT") and ('FROM "raw_events"' in sql or 'FROM "trace_events"' in sql)
        ]
        found: dict[str, Any] = {
            "path": path,
            "status": response.status_code,
            "wall_ms": wall,
            "queries": len(queries),
            "sql_ms": sum(ms for ms, _ in queries),
        }
        if listing:
            with connection.cursor() as cursor:
                plan, executed = _explain(cursor, listing[-1])
                found.update(sql=listing[-1], plan=plan, execution_ms=executed)
                if NEW_INDEX in "\n".join(plan):
                    with transaction.atomic():
                        cursor.execute(f"DROP INDEX {NEW_INDEX}")
                        _, found["without_new_index_ms"] = _explain(cursor, listing[-1])
                        transaction.set_rollback(True)
        out.append(found)
    return out


def _groups() -> list[dict[str, Any]]:
    """In a Django process: the last day's dead-letter groups, biggest first (key, count, signature)."""
    _django()
    from admin_ops.pipeline import dead_letter_groups

    dead = dead_letter_groups(hours=24)
    return [{"key": g.key, "count": g.count, "signature": g.signature, "newest_id": g.ids[0]} for g in dead.groups]


def django_child(mode: str, payload: Any = None) -> Any:
    """Run `python -m bench.console <mode>` under the service's environment; its JSON answer."""
    return django_helper("bench.console", mode, env=service_env(), payload=payload)


# Pages and their baselines
# ------------------------------------------------------------------------------


@dataclass
class Page:
    name: str
    path: str
    expect: str  # a string the answer must contain (a row of the page)
    baseline_sql: str
    baseline_params: list[Any]
    changelist: bool = True  # a raw-events changelist page (the rest are the console's other pages)
    ttfb_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    baseline_ms: list[float] = field(default_factory=list)
    bytes: int = 0
    rows: int = 0
    diagnostics: dict[str, Any] = field(default_factory=dict)


def pages(seeded: Seeded, deep_page: int) -> list[Page]:
    def q(**params: Any) -> str:
        return CHANGELIST + "?" + urlencode(params)

    newest = f"SELECT {LIST_COLUMNS} FROM raw_events"
    biggest = seeded.groups[0]
    busiest, busiest_rows = seeded.busiest
    typical, typical_rows = seeded.typical
    return [
        Page(
            "raw events, page 1",
            CHANGELIST,
            'id="result_list"',
            f"{newest} ORDER BY id DESC LIMIT {PER_PAGE}",
            [],
        ),
        Page(
            "dead letters (state = dead)",
            q(state__exact="dead"),
            f">{seeded.dead_id}<",
            f"{newest} WHERE state = 'dead' ORDER BY id DESC LIMIT {PER_PAGE}",
            [],
        ),
        Page(
            "search: a raw event id",
            q(q=seeded.middle_id),
            f">{seeded.middle_id}<",
            f"{newest} WHERE id = %s",
            [seeded.middle_id],
        ),
        Page(
            f"search: a Terra user ({typical_rows:,} rows)",
            q(q=typical),
            typical,
            f"{newest} WHERE terra_user_id = %s ORDER BY id DESC LIMIT {PER_PAGE}",
            [typical],
        ),
        Page(
            f"search: the busiest Terra user ({busiest_rows:,} rows)",
            q(q=busiest),
            busiest,
            f"{newest} WHERE terra_user_id = %s ORDER BY id DESC LIMIT {PER_PAGE}",
            [busiest],
        ),
        Page(
            "search: a request id",
            q(q=seeded.request_id),
            f">{seeded.middle_id}<",
            f"{newest} WHERE request_id = %s ORDER BY id DESC LIMIT {PER_PAGE}",
            [seeded.request_id],
        ),
        Page(
            "page 2",
            q(p=2),
            'id="result_list"',
            f"{newest} ORDER BY id DESC LIMIT {PER_PAGE} OFFSET {PER_PAGE}",
            [],
        ),
        Page(
            f"page {deep_page:,} (offset {(deep_page - 1) * PER_PAGE:,})",
            q(p=deep_page),
            'id="result_list"',
            f"{newest} ORDER BY id DESC LIMIT {PER_PAGE} OFFSET {(deep_page - 1) * PER_PAGE}",
            [],
        ),
        Page(
            "change page of one row (payload pretty-printed)",
            f"{CHANGELIST}{seeded.middle_id}/change/",
            "<pre",
            "SELECT * FROM raw_events WHERE id = %s",
            [seeded.middle_id],
            changelist=False,
        ),
        Page(
            f"home: the pipeline at a glance ({seeded.states.get('dead', 0):,} dead, {biggest['count']:,} in 24 h's biggest group)",
            HOME,
            'id="pipeline-verdict"',
            "SELECT id, event_type, process_error, dead_lettered_at FROM raw_events WHERE state = 'dead' "
            "AND dead_lettered_at >= now() - interval '24 hours' ORDER BY dead_lettered_at DESC, id DESC LIMIT 10001",
            [],
            changelist=False,
        ),
        Page(
            f"dead-letter group: its events ({biggest['count']:,})",
            f"{GROUPS}{biggest['key']}/",
            'id="group-rows"',
            "SELECT id, event_type, process_error, dead_lettered_at FROM raw_events WHERE state = 'dead' "
            "AND dead_lettered_at >= now() - interval '24 hours' ORDER BY dead_lettered_at DESC, id DESC LIMIT 10001",
            [],
            changelist=False,
        ),
        Page(
            "dead-letter group: dry run of a replay (5 events)",
            f"{GROUPS}{biggest['key']}/dry-run/",
            'class="module dry-run"',
            "SELECT * FROM raw_events WHERE id = %s",
            [biggest["newest_id"]],
            changelist=False,
        ),
        Page(
            "dead-letter group: replay confirmation",
            f"{GROUPS}{biggest['key']}/replay/",
            "Yes, replay",
            "SELECT id, event_type, process_error, dead_lettered_at FROM raw_events WHERE state = 'dead' "
            "AND dead_lettered_at >= now() - interval '24 hours' ORDER BY dead_lettered_at DESC, id DESC LIMIT 10001",
            [],
            changelist=False,
        ),
        Page(
            "a dead event's page (state, actions, journey, payload)",
            f"{CHANGELIST}{seeded.recent_dead_id}/change/",
            'id="raw-event-journey"',
            "SELECT * FROM raw_events WHERE id = %s",
            [seeded.recent_dead_id],
            changelist=False,
        ),
        Page(
            f"traces, page 1 ({seeded.traces:,} traces)",
            TRACES,
            'id="result_list"',
            f"SELECT {TRACE_COLUMNS} FROM trace_events ORDER BY ts DESC LIMIT {PER_PAGE}",
            [],
            changelist=False,
        ),
    ]


def index_checks(seeded: Seeded) -> list[tuple[str, str]]:
    """The console's other filters and searches, for their plans: (what, path)."""
    today = dt.datetime.now(dt.UTC).date()
    since = {"received_at__gte": f"{today - dt.timedelta(days=7)} 00:00:00+00:00"}
    day = {
        "received_at__gte": f"{today} 00:00:00+00:00",
        "received_at__lt": f"{today + dt.timedelta(days=1)} 00:00:00+00:00",
    }
    raw = [
        ("state = parked", {"state__exact": "parked"}),
        ("state = received", {"state__exact": "received"}),
        ("state = processing", {"state__exact": "processing"}),
        ("state = skipped", {"state__exact": "skipped"}),
        ("state = processed", {"state__exact": "processed"}),
        ("event type = daily", {"event_type": "daily"}),
        ("event type = permission_change (1 %)", {"event_type": "permission_change"}),
        ("event type = unknown (no rows)", {"event_type": "unknown"}),
        ("provider = OURA", {"provider": "OURA"}),
        ("source = webhook", {"source__exact": "webhook"}),
        ("source = import (0.5 %)", {"source__exact": "import"}),
        ("source = s3_payload (no rows)", {"source__exact": "s3_payload"}),
        ("received today", day),
        ("received in the past 7 days", since),
        ("dead letters of one type", {"state__exact": "dead", "event_type": "sleep"}),
        ("dead letters of one provider, page 2", {"state__exact": "dead", "provider": "OURA", "p": 2}),
        ("search: an id that does not exist", {"q": "987654321"}),
        ("search: a term that matches nothing", {"q": "no-such-terra-user"}),
    ]
    traces = [
        ("traces: level = error", {"level": "error"}),
        ("traces: today", {"ts__gte": f"{today} 00:00:00+00:00"}),
        ("traces: search a request id", {"q": seeded.request_id}),
        ("traces: search a raw event id", {"q": seeded.middle_id}),
        ("traces: search a user id", {"q": "user_00042"}),
    ]
    return [(name, CHANGELIST + "?" + urlencode(params)) for name, params in raw] + [
        (name, TRACES + "?" + urlencode(params)) for name, params in traces
    ]


def fetch(port: int, path: str, cookie: str) -> tuple[int, float, float, bytes]:
    """One GET on a new connection: (status, ms to the first byte, ms to the last byte, body)."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".encode()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request)
        chunks = [sock.recv(65536)]
        first = time.perf_counter()
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        last = time.perf_counter()
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, (first - started) * 1000, (last - started) * 1000, body


def measure(page: Page, port: int, cookie: str, warmup: int, count: int) -> None:
    for index in range(warmup + count):
        status, ttfb, total, body = fetch(port, page.path, cookie)
        text = body.decode("utf-8", "replace")
        if status != 200 or page.expect not in text:
            raise RuntimeError(f"{page.name}: {page.path} answered {status} without {page.expect!r}:\n{text[:2000]}")
        if index >= warmup:
            page.ttfb_ms.append(ttfb)
            page.total_ms.append(total)
        page.bytes = len(body)
        page.rows = text.count('<tr class="') or text.count("<tr>") - 1


def measure_baseline(page: Page, conn: psycopg.Connection, warmup: int, count: int) -> None:
    for index in range(warmup + count):
        started = time.perf_counter()
        rows = conn.execute(page.baseline_sql, page.baseline_params).fetchall()  # type: ignore[arg-type]
        elapsed = (time.perf_counter() - started) * 1000
        if not rows:
            raise RuntimeError(f"baseline of {page.name}: no rows")
        if index >= warmup:
            page.baseline_ms.append(elapsed)


# Report
# ------------------------------------------------------------------------------


def _p(values: list[float], percent: int) -> float | None:
    return percentile(sorted(values), percent)


def results_table(all_pages: list[Page]) -> list[str]:
    header = [
        "page",
        "TTFB p50 ms",
        "TTFB p99 ms",
        "total p50 ms",
        "total p99 ms",
        "baseline p50 ms",
        "baseline p99 ms",
        "TTFB p50 / baseline p50",
        "HTML bytes",
    ]
    rows = []
    for page in all_pages:
        ttfb, base = _p(page.ttfb_ms, 50), _p(page.baseline_ms, 50)
        rows.append(
            [
                page.name,
                fmt(ttfb),
                fmt(_p(page.ttfb_ms, 99)),
                fmt(_p(page.total_ms, 50)),
                fmt(_p(page.total_ms, 99)),
                fmt(base, 2),
                fmt(_p(page.baseline_ms, 99), 2),
                f"{ttfb / base:.0f} x" if ttfb and base else "-",
                f"{page.bytes:,}",
            ]
        )
    return markdown_table(header, rows)


def plan_summary(plan: list[str]) -> str:
    """The scans of a plan, in order: `Index Scan Backward using raw_events_pkey`, `Seq Scan on ...`."""
    scans = []
    for line in plan:
        text = line.strip().removeprefix("->").strip()
        for kind in ("Index Only Scan", "Index Scan", "Bitmap Index Scan", "Seq Scan"):
            if text.startswith(kind):
                scans.append(text.split("  (", 1)[0])
                break
    return " + ".join(scans) or "-"


def diagnostics_table(found: list[tuple[str, dict[str, Any]]]) -> list[str]:
    header = ["page", "queries", "SQL ms", "list query: scans", "EXPLAIN ANALYZE ms", "without the new index ms"]
    header.append("render in-process ms")
    rows = [
        [
            name,
            str(d.get("queries", "-")),
            fmt(d.get("sql_ms"), 0),
            plan_summary(d.get("plan", [])),
            fmt(d.get("execution_ms"), 2),
            fmt(d.get("without_new_index_ms"), 1),
            fmt(d.get("wall_ms")),
        ]
        for name, d in found
    ]
    return markdown_table(header, rows)


def goal_lines(all_pages: list[Page]) -> list[str]:
    judged = all_pages
    worst = max(judged, key=lambda page: _p(page.ttfb_ms, 99) or 0.0)
    worst_p99 = _p(worst.ttfb_ms, 99) or 0.0
    over = [page.name for page in judged if (_p(page.ttfb_ms, 99) or 0.0) > GOAL_TTFB_MS]
    verdict = "MET" if not over else "NOT MET"
    line = (
        f"-> {verdict}: every console page measured (the changelists, the home page, the dead-letter group's "
        f"pages, a raw event's page) has a TTFB p99 <= {GOAL_TTFB_MS:g} ms; the slowest is {worst.name} at p99 "
        f"{worst_p99:.1f} ms "
        f"(p50 {fmt(_p(worst.ttfb_ms, 50))} ms)"
    )
    if over:
        line = f"-> NOT MET: TTFB p99 over {GOAL_TTFB_MS:g} ms on: {', '.join(over)}"
    return [GOAL_TEXT + " (judged on the p99 of every page measured)", line]


def report(
    args: argparse.Namespace,
    pg: dict[str, str],
    seeded: Seeded,
    all_pages: list[Page],
    checks: list[tuple[str, dict[str, Any]]],
) -> str:
    load = os.getloadavg()
    states = ", ".join(f"{n:,} {state}" for state, n in seeded.states.items())
    seconds = ", ".join(f"{name} {value:.1f} s" for name, value in seeded.seconds.items())
    lines = [
        "# Console benchmark: the console's pages on a big ledger",
        "",
        (
            f"- run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC, commit {git_revision()}, "
            f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
        ),
        (
            f"- data ({DB_NAME}, seeded with SQL): {seeded.rows:,} raw_events ({states}) of {seeded.users:,} "
            f"Terra users (each with an API user and a connection; the busiest has {seeded.busiest[1]:,} rows, "
            f"the median one {seeded.typical[1]:,}), payloads of ~3.5 kB of Terra-shaped JSON; {seeded.traces:,} "
            f"trace_events; raw_events is {seeded.sizes['raw_events']}. Seeding: {seconds}"
        ),
        (
            f"- web: gunicorn amy.wsgi, {WEB_WORKERS} sync workers, DEBUG=false, LOG_LEVEL=WARNING; a staff "
            "superuser's session cookie; one client at concurrency 1, a new TCP connection per request; "
            f"{args.warmup} warm-up then {args.requests} measured requests per page. TTFB = connect + request "
            "until the first byte of the answer; total = until the last byte (gunicorn closes the connection)"
        ),
        (
            "- baseline: one bare psycopg connection (no Django, no HTTP), per page a SELECT of the rows and columns "
            "the page shows (the list's columns without the payload; the change page: the whole row); "
            f"{args.warmup} warm-up then {args.requests} measured"
        ),
        f"- PostgreSQL {pg.get('server_version')} (shared_buffers={pg.get('shared_buffers')})",
        "- a shared 2-core machine with other jobs running: figures are noisy, compare within the run",
        "",
        *results_table(all_pages),
        "",
        *goal_lines(all_pages),
        "",
        (
            "Where the time goes: each page rendered once in a Django process (test client, no HTTP): its SQL "
            "statements, the scans of its list query (the one reading the page's rows) under EXPLAIN ANALYZE, and "
            f"that query without {NEW_INDEX} (dropped in a rolled-back transaction) where the plan uses it:"
        ),
        "",
        *diagnostics_table([(page.name, page.diagnostics) for page in all_pages]),
        "",
        "Every other filter and search of the raw events and traces changelists, the same way (not timed over HTTP):",
        "",
        *diagnostics_table(checks),
    ]
    slowest = sorted(
        [(page.name, page.diagnostics) for page in all_pages] + checks,
        key=lambda item: item[1].get("execution_ms", 0.0),
        reverse=True,
    )[:2]
    for name, found in slowest:
        if found.get("plan"):
            lines += ["", f"Plan of the slowest list queries: {name}", "", "```", *found["plan"][:16], "```"]
    return "\n".join(lines) + "\n"


# Main
# ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "session", "queries", "groups"])
    parser.add_argument("--rows", type=int, default=1_000_000, help="raw_events rows (default 1,000,000)")
    parser.add_argument("--users", type=int, default=5_000, help="Terra users (default 5,000)")
    parser.add_argument("--traces", type=int, default=20_000, help="trace_events rows (default 20,000)")
    parser.add_argument("--requests", type=int, default=30, help="measured requests per page (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up requests per page (default 3)")
    parser.add_argument("--deep-page", type=int, default=1000, help="the later page measured (default 1000)")
    args = parser.parse_args(argv)
    if args.mode == "session":
        print("result " + json.dumps(_staff_session()))
        return 0
    if args.mode == "groups":
        print("result " + json.dumps(_groups()))
        return 0
    if args.mode == "queries":
        print("result " + json.dumps(_queries(json.loads(sys.stdin.read()))))
        return 0
    if min(args.rows, args.users, args.traces, args.requests) < 1 or args.warmup < 0 or args.deep_page < 2:
        parser.error("counts must be positive and --deep-page at least 2")
    exit_cleanly_on_signals()
    RESULTS.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()

    log(f"database {DB_NAME}: drop, create, migrate")
    pg = recreate_database()
    migrate()
    log(f"seed: {args.rows:,} raw_events of {args.users:,} Terra users, {args.traces:,} traces (SQL)")
    seeded = seed(args.rows, args.users, args.traces)
    cookie = django_child("session")["cookie"]
    seeded.groups = django_child("groups")
    seeded.recent_dead_id = seeded.groups[0]["newest_id"]
    log(f"  the last day's dead letters: {sum(g['count'] for g in seeded.groups):,} in {len(seeded.groups)} groups")
    all_pages = pages(seeded, args.deep_page)

    access_log, server_log = RESULTS / "console-gunicorn-access.log", RESULTS / "console-gunicorn.log"
    for path in (access_log, server_log):
        path.unlink(missing_ok=True)
    web = web_server(access_log, server_log)
    try:
        log(f"gunicorn amy.wsgi on {web.url} ({WEB_WORKERS} sync workers)")
        web.start()
        for page in all_pages:
            measure(page, web.port, cookie, args.warmup, args.requests)
            log(
                f"  {page.name}: TTFB p50 {fmt(_p(page.ttfb_ms, 50))} ms, p99 {fmt(_p(page.ttfb_ms, 99))} ms, "
                f"{page.bytes:,} bytes"
            )
    finally:
        web.stop()
    log("baseline: bare psycopg SELECTs of the same rows")
    with psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
        for page in all_pages:
            measure_baseline(page, conn, args.warmup, args.requests)
    log("diagnostics: each page's SQL and plans in a Django process")
    extra = index_checks(seeded)
    found = django_child("queries", [page.path for page in all_pages] + [path for _, path in extra])
    for page, diagnostics in zip(all_pages, found, strict=False):
        page.diagnostics = diagnostics
    checks = [(name, diagnostics) for (name, _), diagnostics in zip(extra, found[len(all_pages) :], strict=True)]

    text = report(args, pg, seeded, all_pages, checks)
    write_results("console", text, f" in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
