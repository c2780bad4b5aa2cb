"""Benchmark of imports (run it with `bench/run import`): payloads per second through one Celery
worker process, and the memory of that process while it imports files up to the 50 MB cap.

Workload: JSON arrays of the daily fixture (tests/fixtures/terra/daily.json, compacted, about
3.5 KB each), a new Terra user id in each so every entry is a new ledger row. Files are written to
disk as they are generated and stored through the upload path (ImportSpool, import_job_create)
into a local `uploads` directory; nothing is timed until the job is published.

Worker: `celery -A amy worker -Q amy -P prefork -c 1` (production settings: acks late, prefetch 1,
the default batch of 500 entries per transaction), consuming only `amy`, so the terra-events nudges
the import publishes wait in Redis and no normalization shares the machine. A warm-up import of a
few entries is its readiness signal. The clock runs from the publish of the job to `completed`
(polled every 20 ms).

Memory: the pool child (the process that runs the import) is sampled every 10 ms from
/proc/<pid>/status: the largest VmRSS seen and VmHWM (the kernel's high-water mark of the
process's whole life) at the end. Each file size gets a fresh worker, so VmHWM covers the start of
that process and the import and nothing else. Goal: under 150 MiB, whatever the size.

Baseline, in the same run, in the benchmark's process (no Django code on its path): one psycopg connection with
client-side binding (as Django's) doing per entry of the same 10,000-entry file json.loads,
classify, sha256 and the ledger INSERT (ingest/services/webhook.py's statement), committing every
500 and then publishing one nudge per inserted row with a bare Celery app over one held producer,
reading the file line by line. Its publishing time is reported apart.

Own database `amy_bench_import` (dropped and recreated) and a private redis-server on a free port,
so it can run beside the other benchmarks and tests. The report goes to stdout and to
bench/results/import.md; the goal lines never fail the run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.bodies import insert_sql
from bench.common import DB_NAME as BENCH_DB_NAME
from bench.common import (
    RESULTS,
    ROOT,
    bench_worker,
    exit_cleanly_on_signals,
    fmt,
    git_revision,
    log,
    markdown_table,
    recreate_database,
    service_env,
    write_results,
)
from harness.processes import CeleryWorker, RedisServer, children, manage, memory_kib

DB_NAME = f"{BENCH_DB_NAME}_import"  # amy_bench_import unless BENCH_DATABASE says otherwise
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
FIXTURE = ROOT / "tests" / "fixtures" / "terra" / "daily.json"
MIB = 1024 * 1024
POLL_SECONDS = 0.02
SAMPLE_SECONDS = 0.01
GOAL_RSS_MIB = 150.0
BASELINE_BATCH = 500


def import_env(redis_url: str, files: Path) -> dict[str, str]:
    return service_env(database_url=DATABASE_URL, redis_url=redis_url, AMY_FILES_ROOT=str(files))


# Files ----------------------------------------------------------------------------------------------


class Entries:
    """Compact daily bodies, each with a new Terra user id."""

    def __init__(self, stem: str) -> None:
        template = json.loads(FIXTURE.read_text())
        original = template["user"]["user_id"]
        text = json.dumps(template, separators=(",", ":"))
        if text.count(original) != 1:
            raise ValueError(f"{FIXTURE} must contain its user_id exactly once")
        self.prefix, self.suffix = text.split(original)
        self.stem = stem
        self.count = 0

    def next(self) -> bytes:
        self.count += 1
        return f"{self.prefix}{self.stem}-{self.count:012d}{self.suffix}".encode()


def write_array(path: Path, entries: Entries, *, count: int | None = None, max_bytes: int | None = None) -> int:
    """A JSON array, one element per line, of `count` entries or as many as fit in `max_bytes`."""
    written = 0
    size = 2
    with path.open("wb") as out:
        out.write(b"[\n")
        while count is None or written < count:
            entry = entries.next()
            if max_bytes is not None and size + len(entry) + 2 > max_bytes:
                break
            out.write((b",\n" if written else b"") + entry)
            size += len(entry) + (2 if written else 0)
            written += 1
        out.write(b"\n]")
    return written


# Processes ------------------------------------------------------------------------------------------


def start_worker(env: dict[str, str], log_path: Path) -> CeleryWorker:
    """One pool child on the `amy` queue, where import runs go."""
    worker = bench_worker(f"import-{time.monotonic_ns()}", log_path, queues=("amy",), env=env)
    worker.start()
    return worker


class MemorySampler(threading.Thread):
    """The pool children of a worker, sampled every SAMPLE_SECONDS: the largest VmRSS seen, and
    each child's last VmHWM."""

    def __init__(self, worker_pid: int) -> None:
        super().__init__(daemon=True)
        self.worker_pid = worker_pid
        self.peak_rss_kib = 0
        self.hwm_kib: dict[int, int] = {}
        self.samples = 0
        self.pids: list[int] = []
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_SECONDS)

    def sample(self) -> None:
        # The children are listed again only when one is gone (a pool child may be replaced):
        # a pgrep every 10 ms would cost the measured worker its CPU.
        if not self.pids or any(memory_kib(pid) == (0, 0) for pid in self.pids):
            self.pids = children(self.worker_pid)
        for pid in self.pids:
            rss, hwm = memory_kib(pid)
            self.peak_rss_kib = max(self.peak_rss_kib, rss)
            if hwm:
                self.hwm_kib[pid] = hwm
        self.samples += 1

    def stop(self) -> None:
        self._stop.set()
        self.join(timeout=5)
        self.sample()

    @property
    def peak_hwm_kib(self) -> int:
        return max(self.hwm_kib.values(), default=0)


# Django side (this process, on the bench database and the private Redis) ----------------------------


class Importer:
    def __init__(self) -> None:
        import django

        django.setup()
        from accounts.models import User

        self.user = User.objects.get_or_create(id="user_bench_import")[0]

    def create(self, path: Path) -> int:
        from ingest.imports.services import ImportSpool, import_job_create

        spool = ImportSpool(max_bytes=50 * MIB)
        try:
            with path.open("rb") as file:
                while chunk := file.read(MIB):
                    spool.write(chunk)
            # The publish is the clock's start: the commit's own publish is replaced by ours below.
            from ingest.imports import services

            publish = services.publish_import_job
            services.publish_import_job = lambda *args, **kwargs: True  # type: ignore[assignment]
            try:
                job = import_job_create(user=self.user, spool=spool, request_id="req_bench_import")
            finally:
                services.publish_import_job = publish  # type: ignore[assignment]
        finally:
            spool.close()
        return job.pk

    def publish(self, import_job_id: int) -> None:
        from ingest.imports.services import publish_import_job

        if not publish_import_job(import_job_id, "req_bench_import"):
            raise RuntimeError("the import job could not be published")

    def state(self, import_job_id: int) -> dict[str, Any]:
        from ingest.models import ImportJob

        return ImportJob.objects.values(
            "status", "total", "accepted", "duplicates", "rejected", "error", "attempts", "size_bytes"
        ).get(pk=import_job_id)

    def close(self) -> None:
        from django.db import connections

        connections.close_all()


@dataclass
class Run:
    label: str
    file_bytes: int
    entries: int
    seconds: float
    state: dict[str, Any]
    idle_rss_kib: int
    peak_rss_kib: int
    peak_hwm_kib: int
    samples: int

    @property
    def per_second(self) -> float:
        return self.state["accepted"] / self.seconds if self.seconds else 0.0


def wait_job(importer: Importer, import_job_id: int, timeout: float, worker: CeleryWorker) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = importer.state(import_job_id)
        if state["status"] in ("completed", "failed"):
            return state
        worker.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"import {import_job_id} not finished after {timeout:g} s: {state}")
        time.sleep(POLL_SECONDS)


def import_run(
    label: str, importer: Importer, env: dict[str, str], path: Path, entries: int, warmup: Path, timeout: float
) -> Run:
    """A fresh worker: a warm-up import, then `path`, timed and sampled."""
    worker_log = RESULTS / "import-worker.log"
    worker = start_worker(env, worker_log)
    try:
        warm = importer.create(warmup)
        importer.publish(warm)
        if wait_job(importer, warm, 90, worker)["status"] != "completed":
            raise RuntimeError(f"the warm-up import failed; see {worker_log}")
        [child] = children(worker.pid) or [0]
        idle_rss = memory_kib(child)[0]
        job = importer.create(path)
        sampler = MemorySampler(worker.pid)
        sampler.start()
        started = time.monotonic()
        importer.publish(job)
        state = wait_job(importer, job, timeout, worker)
        seconds = time.monotonic() - started
        sampler.stop()
    finally:
        worker.stop(grace=10)
    return Run(
        label=label,
        file_bytes=path.stat().st_size,
        entries=entries,
        seconds=seconds,
        state=state,
        idle_rss_kib=idle_rss,
        peak_rss_kib=sampler.peak_rss_kib,
        peak_hwm_kib=sampler.peak_hwm_kib,
        samples=sampler.samples,
    )


# Baseline -------------------------------------------------------------------------------------------


def baseline(path: Path, redis_url: str) -> tuple[int, float, float]:
    """Bare psycopg and Celery over the file (one element per line): per entry json.loads,
    classify, sha256 and the ledger INSERT (client-side binding, as Django), COMMIT every
    BASELINE_BATCH, then one nudge per inserted row to terra-events over one held producer.
    Returns (rows inserted, seconds, of which publishing)."""
    from celery import Celery

    from ingest.classify import classify

    statement = insert_sql()
    app = Celery("bench-import-baseline", broker=redis_url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    inserted = 0
    publishing = 0.0
    url = DATABASE_URL.replace("postgres://", "postgresql://")
    with (
        psycopg.connect(url, connect_timeout=5, cursor_factory=psycopg.ClientCursor) as conn,
        app.producer_pool.acquire(block=True, timeout=10) as producer,
    ):
        conn.execute("TRUNCATE raw_events RESTART IDENTITY CASCADE")
        conn.commit()

        def commit_and_publish(ids: list[int]) -> None:
            nonlocal publishing
            conn.commit()
            started = time.monotonic()
            for raw_event_id in ids:
                app.send_task(
                    "ingest.normalize_raw_event",
                    kwargs={"raw_event_id": raw_event_id, "request_id": "req_bench_baseline"},
                    queue="terra-events",
                    producer=producer,
                    retry=True,
                    retry_policy={"max_retries": 0},
                )
            publishing += time.monotonic() - started

        started = time.monotonic()
        with path.open("rb") as file, conn.cursor() as cursor:
            ids: list[int] = []
            pending = 0
            for line in file:
                raw = line.strip().removesuffix(b",")
                if raw in (b"[", b"]", b""):
                    continue
                text = raw.decode()
                c = classify(json.loads(text))
                cursor.execute(
                    statement,
                    [
                        c.event_type,
                        c.terra_user_id,
                        c.reference_id,
                        c.provider,
                        text,
                        False,
                        hashlib.sha256(raw).hexdigest(),
                        "req_bench_baseline",
                        None,
                        None,
                        None,
                        "import",
                        None,
                        None,
                        1,
                        "received",
                    ],
                )
                row = cursor.fetchone()
                if row is not None:
                    ids.append(row[0])
                    inserted += 1
                pending += 1
                if pending == BASELINE_BATCH:
                    commit_and_publish(ids)
                    ids, pending = [], 0
            commit_and_publish(ids)
        seconds = time.monotonic() - started
    return inserted, seconds, publishing


# Report ---------------------------------------------------------------------------------------------


def mib(kib: int) -> str:
    return fmt(kib / 1024, 1)


def report(pg: dict[str, str], throughput: Run, base: tuple[int, float, float], memory: list[Run]) -> str:
    base_rows, base_seconds, base_publishing = base
    base_rate = base_rows / base_seconds if base_seconds else 0.0
    ratio = throughput.per_second / base_rate if base_rate else None
    worst = max((r.peak_hwm_kib for r in memory), default=0)
    memory_ok = worst and worst / 1024 < GOAL_RSS_MIB and all(r.state["status"] == "completed" for r in memory)
    load = os.getloadavg()
    lines = [
        "# Import benchmark",
        "",
        (
            f"- run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC, commit {git_revision()}, {os.cpu_count()} CPUs, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
        ),
        (
            "- files: JSON arrays of the daily fixture, compacted (about "
            f"{throughput.file_bytes / max(throughput.entries, 1):.0f} B per entry), a new Terra user id in each "
            "entry (every entry a new ledger row), stored through the upload path into a local directory"
        ),
        (
            "- worker: `celery -A amy worker -Q amy -P prefork -c 1 --without-gossip --without-mingle "
            "--without-heartbeat`, production settings (batch 500 entries per transaction, acks late, "
            "prefetch 1), LOG_LEVEL=WARNING, a fresh worker per import after a warm-up import; only `amy` is "
            "consumed, so the nudges wait in Redis; time = publish of the job to `completed` "
            f"(polled every {POLL_SECONDS * 1000:.0f} ms)"
        ),
        (
            "- baseline: bare code in the benchmark process (no Django on its path), one psycopg connection (client-side binding, as Django), "
            "per entry json.loads + classify + sha256 + the ledger INSERT, COMMIT every "
            f"{BASELINE_BATCH} and then one Celery nudge per inserted row to terra-events over one held producer, "
            "over the same file read line by line"
        ),
        (
            f"- PostgreSQL {pg.get('server_version')} (fsync={pg.get('fsync')}, "
            f"synchronous_commit={pg.get('synchronous_commit')}), database {DB_NAME}; a private redis-server"
        ),
        "",
        "## Throughput",
        "",
        *markdown_table(
            ["phase", "entries", "file MiB", "seconds", "payloads/s", "accepted"],
            [
                [
                    "worker (1 process)",
                    str(throughput.entries),
                    fmt(throughput.file_bytes / MIB, 1),
                    fmt(throughput.seconds, 2),
                    fmt(throughput.per_second),
                    str(throughput.state["accepted"]),
                ],
                [
                    "baseline (bare psycopg + Celery)",
                    str(throughput.entries),
                    fmt(throughput.file_bytes / MIB, 1),
                    fmt(base_seconds, 2),
                    fmt(base_rate),
                    str(base_rows),
                ],
            ],
        ),
        "",
        (
            f"ratio worker / baseline: {fmt(None if ratio is None else 100 * ratio)} %; the baseline spent "
            f"{fmt(base_publishing, 2)} s of its {fmt(base_seconds, 2)} s publishing the nudges (one Celery send_task "
            "each, as ingest.publish.publish_raw_events does)"
        ),
        "",
        "## Memory of the importing process (the pool child)",
        "",
        *markdown_table(
            [
                "file MiB",
                "entries",
                "seconds",
                "payloads/s",
                "status",
                "idle VmRSS MiB",
                "peak VmRSS MiB (sampled)",
                "VmHWM MiB",
                "samples",
            ],
            [
                [
                    fmt(r.file_bytes / MIB, 1),
                    str(r.entries),
                    fmt(r.seconds, 2),
                    fmt(r.per_second),
                    r.state["status"],
                    mib(r.idle_rss_kib),
                    mib(r.peak_rss_kib),
                    mib(r.peak_hwm_kib),
                    str(r.samples),
                ]
                for r in memory
            ],
        ),
        "",
        f"goal: the importing process stays under {GOAL_RSS_MIB:g} MiB (VmHWM), flat whatever the file size",
        (
            f"-> {'MET' if memory_ok else 'NOT MET'}: largest VmHWM {mib(worst)} MiB; growth over the idle process "
            + ", ".join(
                f"{fmt(r.file_bytes / MIB, 0)} MiB file: +{mib(r.peak_rss_kib - r.idle_rss_kib)}" for r in memory
            )
        ),
    ]
    failed = [r for r in [throughput, *memory] if r.state["status"] != "completed"]
    if failed:
        lines += ["", "Not completed:", *(f"- {r.label}: {r.state}" for r in failed)]
    return "\n".join(lines) + "\n"


# Main -------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payloads", type=int, default=10_000, help="entries of the throughput import (10,000)")
    parser.add_argument(
        "--sizes", default="5,20,50", help="file sizes in MiB for the memory runs (default 5,20,50; at most 50)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="bound on one import (default 600 s)")
    args = parser.parse_args(argv)
    sizes = [float(s) for s in args.sizes.split(",") if s]
    if args.payloads < 1 or not sizes or any(not 0 < s <= 50 for s in sizes):
        parser.error("--payloads must be positive and --sizes within (0, 50]")
    exit_cleanly_on_signals()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "import-worker.log").unlink(missing_ok=True)

    log(f"database {DB_NAME}: drop, create, migrate; a private redis-server")
    pg = recreate_database(DB_NAME)
    redis_server = RedisServer()
    redis_server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="amy-bench-import-") as tmp:
            work = Path(tmp)
            files = work / "uploads"
            files.mkdir()
            env = import_env(redis_server.url, files)
            manage(env, "migrate", "--no-input", timeout=180)
            os.environ.update(env)
            importer = Importer()
            try:
                warmup = work / "warmup.json"
                write_array(warmup, Entries("warmup"), count=20)
                throughput_file = work / "throughput.json"
                count = write_array(throughput_file, Entries("throughput"), count=args.payloads)
                log(f"throughput: {count} payloads ({throughput_file.stat().st_size / MIB:.1f} MiB) through one worker")
                throughput = import_run("throughput", importer, env, throughput_file, count, warmup, args.timeout)
                log(f"  {throughput.seconds:.2f} s = {throughput.per_second:.0f} payloads/s ({throughput.state})")
                log("baseline: bare psycopg and Celery over the same file")
                base = baseline(throughput_file, redis_server.url)
                log(f"  {base[0]} rows in {base[1]:.2f} s = {base[0] / base[1]:.0f}/s ({base[2]:.2f} s publishing)")
                memory = []
                for size in sizes:
                    path = work / f"size-{size:g}.json"
                    entries = write_array(path, Entries(f"size{size:g}"), max_bytes=int(size * MIB))
                    log(f"memory: {path.stat().st_size / MIB:.1f} MiB, {entries} payloads, fresh worker")
                    run = import_run(f"{size:g} MiB", importer, env, path, entries, warmup, args.timeout)
                    log(
                        f"  {run.seconds:.2f} s, idle {run.idle_rss_kib / 1024:.1f} MiB, peak VmRSS "
                        f"{run.peak_rss_kib / 1024:.1f} MiB, VmHWM {run.peak_hwm_kib / 1024:.1f} MiB"
                    )
                    memory.append(run)
                    path.unlink()
            finally:
                importer.close()
    finally:
        redis_server.kill()

    text = report(pg, throughput, base, memory)
    write_results("import", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
