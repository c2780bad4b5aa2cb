"""One measured phase, in a fresh process started by bench/ingest.py.

    python -m bench.load web      --url http://127.0.0.1:PORT ...   signed POSTs to /webhooks/terra
    python -m bench.load baseline --database-url ... --redis-url ... INSERT + Celery publish, no HTTP

N threads each own one connection (HTTP, or psycopg + a kombu producer). After a barrier, every
thread works flat out: warm-up first (not recorded), then the measured window. An operation counts
in the window when it *starts* inside it; its latency is the wall time around it as this process
sees it (for `web`: client-side, including a new TCP connection per request, since gunicorn's sync
worker closes every connection). Body generation, signing, hashing and parameter building happen
before the clock starts.

Protocol on stdout, one line each: `start` when the window opens, `end` when it closes (so the
caller can sample CPU counters), then `result <json>`. With --handshake the connections stay open
after `end` until a line arrives on stdin, so that the caller's sample still sees their backends.
"""

from __future__ import annotations

import argparse
import http.client
import json
import select
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

# Imported up front, not in the threads: Celery's lazy module attributes are not thread-safe to import.
import psycopg
from celery import Celery

from bench.bodies import BodyFactory, dedup_key, insert_sql
from bench.common import percentile
from ingest.signature import signature_header

WEBHOOK_PATH = "/webhooks/terra"
NORMALIZE_TASK = "ingest.normalize_raw_event"  # as ingest.publish
NORMALIZE_QUEUE = "terra-events"
RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
# As amy/settings.py gives Django's connection; costs nothing per statement but keeps parity.
PG_OPTIONS = "-c statement_timeout=30000 -c lock_timeout=5000 -c idle_in_transaction_session_timeout=60000"


@dataclass
class Clock:
    warm_end: float = 0.0
    end: float = 0.0
    # Set once the caller has sampled CPU counters at `end`: connections (and so the PostgreSQL
    # backends the caller counts) must outlive that sample.
    may_close: threading.Event = field(default_factory=threading.Event)


@dataclass
class ThreadResult:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    # Baseline only: seconds spent in the INSERT and in the publish, per successful operation.
    parts: dict[str, list[float]] = field(default_factory=lambda: {"insert": [], "publish": []})
    setup_error: str | None = None


# A phase's work per body, in two steps: `prepare(body, user_id, in_window)` (untimed: signing,
# hashing, building parameters) returns what `send(prepared)` (timed) needs; `send` returns None
# on success or an error label.
Prepare = Callable[[bytes, str, bool], Any]
Send = Callable[[Any], str | None]


def web_operation(args: argparse.Namespace) -> tuple[Prepare, Send, Callable[[], None]]:
    parts = urlsplit(args.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=10)
    base_headers = {"Content-Type": "application/json", "User-Agent": "amy-bench"}

    def prepare(body: bytes, _user_id: str, in_window: bool) -> tuple[bytes, dict[str, str]]:
        headers = {
            **base_headers,
            "terra-signature": signature_header(body, args.secret, int(time.time())),
            "x-bench-phase": args.label if in_window else "warmup",
        }
        return body, headers

    def send(prepared: tuple[bytes, dict[str, str]]) -> str | None:
        body, headers = prepared
        try:
            conn.request("POST", WEBHOOK_PATH, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            time.sleep(0.01)  # a refused or reset connection must not spin
            return type(exc).__name__
        if response.status != 200:
            return f"HTTP {response.status}"
        if b'"raw_event_id"' not in data:
            return "HTTP 200 without raw_event_id (duplicate?)"
        return None

    return prepare, send, conn.close


def baseline_operation(
    args: argparse.Namespace, thread: int, factory: BodyFactory, out: ThreadResult
) -> tuple[Prepare, Send, Callable[[], None]]:
    sql = insert_sql()
    app = Celery("bench-baseline", broker=args.redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        broker_pool_limit=args.concurrency + 4,  # one held producer per thread
        broker_connection_timeout=1.0,
        broker_transport_options={"socket_timeout": 3, "socket_connect_timeout": 1.0},
    )
    # Django's psycopg backend uses client-side binding (ClientCursor) unless told otherwise.
    conn = psycopg.connect(args.database_url, autocommit=True, cursor_factory=psycopg.ClientCursor, options=PG_OPTIONS)
    cursor = conn.cursor()
    producer = app.producer_pool.acquire(block=True, timeout=10)
    counter = 0

    def prepare(body: bytes, user_id: str, in_window: bool) -> tuple[list[Any], str, bool]:
        nonlocal counter
        counter += 1
        request_id = f"req_bench{thread:04d}{counter:017d}"  # the length of a real req_<ULID>
        # The parameters of ingest.services.webhook.raw_event_insert, in its order.
        params = [
            factory.event_type,
            user_id,
            factory.reference_id,
            factory.provider,
            body.decode(),
            True,  # signature_verified
            dedup_key(body),
            request_id,
            None,  # trace_id
            None,  # terra_reference
            None,  # ordering_ts
            "webhook",
            None,  # parent_id
            None,  # user_id
            None,  # import_id
            "received",
        ]
        return params, request_id, in_window

    def send(prepared: tuple[list[Any], str, bool]) -> str | None:
        params, request_id, in_window = prepared
        try:
            start = time.perf_counter()
            cursor.execute(sql, params)
            row = cursor.fetchone()
            if row is None:
                return "duplicate"
            inserted = time.perf_counter()
            app.send_task(
                NORMALIZE_TASK,
                kwargs={"raw_event_id": row[0], "request_id": request_id},
                queue=NORMALIZE_QUEUE,
                producer=producer,
                retry=True,
                retry_policy=RETRY_POLICY,
            )
            if in_window:
                out.parts["insert"].append(inserted - start)
                out.parts["publish"].append(time.perf_counter() - inserted)
        except Exception as exc:
            time.sleep(0.01)
            return type(exc).__name__
        return None

    def close() -> None:
        producer.release()
        conn.close()

    return prepare, send, close


def worker(args: argparse.Namespace, thread: int, clock: Clock, barrier: threading.Barrier, out: ThreadResult) -> None:
    close: Callable[[], None] = lambda: None  # noqa: E731
    try:
        factory = BodyFactory(args.phase, thread)
        if args.mode == "web":
            prepare, send, close = web_operation(args)
        else:
            prepare, send, close = baseline_operation(args, thread, factory, out)
    except Exception as exc:
        out.setup_error = repr(exc)
        barrier.abort()
        return
    try:
        barrier.wait(timeout=60)
    except threading.BrokenBarrierError:
        close()
        return
    try:
        while True:
            now = time.perf_counter()
            if now >= clock.end:
                break
            in_window = now >= clock.warm_end
            prepared = prepare(*factory.next(), in_window)
            start = time.perf_counter()
            error = send(prepared)
            elapsed = time.perf_counter() - start
            if in_window:
                if error is None:
                    out.latencies.append(elapsed)
                else:
                    out.errors[error] += 1
    finally:
        clock.may_close.wait(timeout=30)
        close()


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["web", "baseline"])
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--phase", type=int, required=True, help="unique per phase of a run: keeps bodies distinct")
    parser.add_argument("--label", default="measured", help="x-bench-phase header of measured requests")
    parser.add_argument("--handshake", action="store_true", help="after `end`, keep connections until a line on stdin")
    parser.add_argument("--url")
    parser.add_argument("--secret", default="bench-secret")
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    args = parser.parse_args(argv)

    clock = Clock()
    barrier = threading.Barrier(args.concurrency + 1)
    results = [ThreadResult() for _ in range(args.concurrency)]
    threads = [
        threading.Thread(target=worker, args=(args, i, clock, barrier, results[i]), daemon=True)
        for i in range(args.concurrency)
    ]
    for thread in threads:
        thread.start()
    # Set the clock before releasing the barrier: the threads read it only after the barrier.
    now = time.perf_counter()
    clock.warm_end = now + args.warmup
    clock.end = clock.warm_end + args.seconds
    try:
        barrier.wait(timeout=60)
    except threading.BrokenBarrierError:
        setup = [r.setup_error for r in results if r.setup_error]
        emit("result " + json.dumps({"setup_error": setup[0] if setup else "barrier timed out"}))
        return 1
    # The clock started when it was set; threads released late only lose a little warm-up.
    time.sleep(max(0.0, clock.warm_end - time.perf_counter()))
    cpu_start = time.process_time()
    emit("start")
    time.sleep(max(0.0, clock.end - time.perf_counter()))
    cpu_end = time.process_time()
    emit("end")
    if args.handshake:
        readable, _, _ = select.select([sys.stdin], [], [], 15)
        if readable:
            sys.stdin.readline()
    clock.may_close.set()
    for thread in threads:
        thread.join(timeout=20)
    stuck = sum(thread.is_alive() for thread in threads)

    latencies = sorted(lat for r in results for lat in r.latencies)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r.errors)
    if stuck:
        errors["thread still busy 20 s after the window"] += stuck

    def ms(value: float | None) -> float | None:
        return None if value is None else value * 1000

    parts = {}
    for name in ("insert", "publish"):
        values = sorted(v for r in results for v in r.parts[name])
        if values:
            parts[name] = {"p50_ms": ms(percentile(values, 50)), "mean_ms": ms(sum(values) / len(values))}

    emit(
        "result "
        + json.dumps(
            {
                "mode": args.mode,
                "concurrency": args.concurrency,
                "seconds": args.seconds,
                "ok": len(latencies),
                "errors": sum(errors.values()),
                "error_kinds": dict(errors.most_common(5)),
                "per_second": len(latencies) / args.seconds,
                "p50_ms": ms(percentile(latencies, 50)),
                "p99_ms": ms(percentile(latencies, 99)),
                "max_ms": ms(latencies[-1] if latencies else None),
                "mean_ms": ms(sum(latencies) / len(latencies) if latencies else None),
                "process_cpu_seconds": cpu_end - cpu_start,
                "parts": parts,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
