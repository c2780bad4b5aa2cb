"""What the benchmarks share: the bench database and Redis db, the processes' environment and their
start (through the shared harness, harness/processes.py), CPU accounting from /proc, percentiles
and report helpers. Every benchmark module under bench/ is a benchmark; this one is their library.

Nothing here imports Django at module level, and nothing imports tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from harness.markdown import markdown_table
from harness.processes import CeleryWorker, Gunicorn, flush_redis

__all__ = ["markdown_table"]

ROOT = Path(__file__).resolve().parent.parent

RESULTS = ROOT / "bench" / "results"

BIN = Path(sys.executable).parent

PYTHON = sys.executable

# BENCH_DATABASE / BENCH_REDIS_DB let two benchmark runs share the machine without sharing state.
DB_NAME = os.environ.get("BENCH_DATABASE", "amy_bench")

PG_ADMIN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres", "connect_timeout": 5}

DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"

REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "14"))

REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"

SECRET = "bench-secret"  # noqa: S105 - the benchmark server's own webhook secret

WEB_WORKERS = 2

ACCESS_LOG_FORMAT = "%({x-bench-phase}i)s %(s)s %(D)s"

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"\033[1m==> {message}\033[0m", file=sys.stderr, flush=True)


def write_results(name: str, text: str, took: str = "") -> None:
    """A benchmark's report: bench/results/<name>.md (what bench/report.py reads), and stdout."""
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    print()
    print(text, end="")
    log(f"written to {path.relative_to(ROOT)}{took}")


def service_env(
    tracing: bool | None = None, *, database_url: str = DATABASE_URL, redis_url: str = REDIS_URL, **overrides: str
) -> dict[str, str]:
    """gunicorn's and manage.py's environment: the bench database and Redis db, quiet logs.

    `tracing` None follows BENCH_TRACING (default on)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AMY_", "CELERY_", "DATABASE_", "REDIS_", "DB_", "TERRA_", "DJANGO_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "amy.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "ENVIRONMENT": "development",
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
            "TERRA_WEBHOOK_SECRET": SECRET,
            "PYTHONUNBUFFERED": "1",
            # BENCH_TRACING=false measures the webhook without the tracer (its cost is a goal).
            "AMY_TRACING": os.environ.get("BENCH_TRACING", "true") if tracing is None else str(tracing).lower(),
        }
    )
    env.update(overrides)
    return env


def recreate_database(name: str = DB_NAME) -> dict[str, str]:
    """Drop and create a bench database; return a few server settings worth printing with the figures."""
    with psycopg.connect(**PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        settings = {}
        for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "shared_buffers"):
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            settings[name] = row[0] if row else "?"
    return settings


def migrate() -> None:
    result = subprocess.run(
        [PYTHON, "manage.py", "migrate", "--no-input"],
        cwd=ROOT,
        env=service_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    if result.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{result.stdout}\n{result.stderr}")


def django_helper(module: str, *args: str, env: dict[str, str], payload: Any = None, timeout: float = 300) -> Any:
    """Run `python -m <module> <args>` (a benchmark's Django-side helper, which prints
    `result <json>` last) under `env`, with `payload` as JSON on its stdin; its answer."""
    result = subprocess.run(
        [PYTHON, "-m", module, *args],
        cwd=ROOT,
        env=env,
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("result ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{module} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return json.loads(lines[-1].removeprefix("result "))


def _process_table() -> dict[int, tuple[str, int, int, int]]:
    """pid -> (comm, ppid, own utime + stime, reaped children's cutime + cstime) in ticks. A
    PostgreSQL backend serving the benchmark's database is named `postgres (DB_NAME)`: other
    databases share this server. Reaped children count because a process alive at the first
    sample (a replaced pool child, its PostgreSQL backend) may be gone at the second."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = Path(entry.path, "stat").read_text()
            comm = raw[raw.index("(") + 1 : raw.rindex(")")]
            rest = raw[raw.rindex(")") + 2 :].split()
            if comm.startswith("postgres") and f" {DB_NAME} " in Path(entry.path, "cmdline").read_text():
                comm = f"postgres ({DB_NAME})"
            table[int(entry.name)] = (comm, int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14]))
    return table


def _machine_busy_ticks() -> int:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle


@dataclass
class CpuSnapshot:
    at: float
    processes: dict[int, tuple[str, int, int, int]]
    busy: int

    @classmethod
    def take(cls) -> CpuSnapshot:
        return cls(time.monotonic(), _process_table(), _machine_busy_ticks())


def cpu_usage(before: CpuSnapshot, after: CpuSnapshot, *, load_pid: int, web_master: int | None) -> dict[str, float]:
    """Cores used on average between the snapshots, by group."""
    seconds = max(after.at - before.at, 1e-6)

    def used(pid: int) -> float:
        ticks_after = after.processes[pid][2]
        ticks_before = before.processes.get(pid, ("", 0, 0, 0))[2]
        return max(0, ticks_after - ticks_before) / CLOCK_TICKS / seconds

    groups = {"gunicorn workers": 0.0, "load/baseline process": 0.0, "postgres": 0.0, "redis": 0.0}
    for pid, (comm, ppid, _, _) in after.processes.items():
        if pid == load_pid:
            groups["load/baseline process"] += used(pid)
        elif web_master is not None and ppid == web_master:
            groups["gunicorn workers"] += used(pid)
        elif comm.startswith("postgres"):
            groups["postgres"] += used(pid)
        elif comm.startswith("redis-server"):
            groups["redis"] += used(pid)
    machine = max(0, after.busy - before.busy) / CLOCK_TICKS / seconds
    groups["everything else"] = max(0.0, machine - sum(groups.values()))
    groups["machine total"] = machine
    return groups


def percentile(sorted_values: list[float], percent: int) -> float | None:
    """Nearest-rank percentile of an ascending list (integer arithmetic: no 0.99 * 100 = 99.000...01)."""
    if not sorted_values:
        return None
    return sorted_values[max(1, -(-percent * len(sorted_values) // 100)) - 1]


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def git_revision() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    return "?"


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def exit_cleanly_on_signals() -> None:
    """SIGTERM/SIGHUP unwind through `finally`, so the processes a benchmark started are stopped."""
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)


def web_server(
    access_log: Path, server_log: Path, *, config: Path | None = None, env: dict[str, str] | None = None
) -> Gunicorn:
    """gunicorn as the benchmarks run it: WEB_WORKERS sync workers, each request's phase label,
    status and time in `access_log`; started once /healthz answered 200 several times (both
    workers up)."""
    return Gunicorn(
        env or service_env(),
        WEB_WORKERS,
        config=config,
        access_log=access_log,
        access_log_format=ACCESS_LOG_FORMAT,
        log_path=server_log,
        ready_statuses=(200,),
        ready_checks=4,
    )


def bench_worker(
    name: str,
    log_path: Path,
    *,
    concurrency: int = 1,
    queues: tuple[str, ...] = ("terra-events", "amy"),
    env: dict[str, str] | None = None,
) -> CeleryWorker:
    """`celery worker` with production settings on the bench database, quiet (WARNING) logs."""
    return CeleryWorker(
        env or service_env(),
        concurrency,
        name=f"bench-{name}",
        queues=queues,
        log_level="WARNING",
        log_path=log_path,
    )


def flush_bench_redis() -> None:
    """Empty the bench Redis db (never another)."""
    flush_redis(REDIS_URL)


def read_line(process: subprocess.Popen[str], timeout: float, what: str) -> str:
    """The next stdout line of a helper process, within `timeout` seconds."""
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], timeout)
    if not readable:
        raise TimeoutError(f"no answer from {what} within {timeout:g} s")
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"{what} exited ({process.wait(timeout=10)})")
    return line.strip()


def send(process: subprocess.Popen[str], line: str) -> None:
    """One command line to a helper process's stdin."""
    assert process.stdin is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()
