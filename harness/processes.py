"""Real processes for tests and benchmarks: private redis-server and PostgreSQL instances, Celery
workers and gunicorn.

Every process is started in its own session and stopped by its process group, never by name, so
a run kills only what it started and leaves the machine's shared servers alone. Everything listens
on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
WORKER_QUEUES = ("terra-events", "amy")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `predicate` until it is true (an exception counts as not yet); TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: S110 - not ready yet
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def kill_group(process: subprocess.Popen[Any] | None, grace: float = 0.0) -> None:
    """Stop a process we started by its own process group: SIGTERM and `grace` seconds to exit
    (none: SIGKILL at once), then SIGKILL."""
    if process is None or process.poll() is not None:
        return
    steps = ((signal.SIGTERM, grace),) if grace > 0 else ()
    for sig, wait in (*steps, (signal.SIGKILL, 15.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
            return


def children(pid: int) -> list[int]:
    """The pids of a process's direct children (gunicorn's or Celery's pool workers)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(child) for child in out.stdout.split()]


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB; (0, 0) once it is gone."""
    values = {"VmRSS": 0, "VmHWM": 0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in values:
                values[name] = int(value.split()[0])
    return values["VmRSS"], values["VmHWM"]


def flush_redis(url: str) -> None:
    """Empty the Redis database at `url` (a benchmark's or a private server's, never a shared one)."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()


class ManagedProcess:
    """A command in its own process group, its output in a log file (a temporary one unless given)."""

    def __init__(
        self, name: str, command: list[str], env: dict[str, str] | None = None, log_path: Path | None = None
    ) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log_path = log_path or Path(tempfile.mkstemp(prefix=f"amy-{name}-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        kill_group(self.process)

    def terminate(self) -> None:
        """SIGTERM to the group, then wait (a clean shutdown, e.g. gunicorn's warm one)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=15)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, `grace` seconds to exit, then SIGKILL."""
        kill_group(self.process, grace=grace)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check(self) -> None:
        """Fail early when the process died under a run."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}); see {self.log_path}")

    def children(self) -> list[int]:
        return children(self.pid)


class RedisServer(ManagedProcess):
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="amy-redis-")
        super().__init__(
            "redis",
            [
                "redis-server",
                *("--port", str(self.port)),
                *("--bind", "127.0.0.1"),
                *("--save", ""),
                *("--appendonly", "no"),
                *("--dir", self.dir),
                *("--maxmemory-policy", "noeviction"),
            ],
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        super().start()
        client = redis.Redis(port=self.port, socket_timeout=1)
        wait_for(client.ping, 10, "redis-server")
        client.close()


class PostgresCluster:
    """A private PostgreSQL cluster (initdb on a free port), run as the `postgres` user when we
    are root, because PostgreSQL refuses to run as root.

    With `template` (the data directory of a cleanly stopped cluster), the new cluster starts as a
    copy of it: a migrated database costs a file copy instead of a `migrate` per test.
    """

    def __init__(self, template: Path | None = None) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="amy-pg-"))
        self.data = self.dir / "data"
        self.bin = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        if template is None:
            self._run([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"])
        else:
            # cp -a keeps the owner and the 0700 mode PostgreSQL insists on.
            self._run(["cp", "-a", str(template), str(self.data)])

    def _run(self, command: list[str]) -> None:
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/amy"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start"]
        )

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server: `immediate` is a crash (no checkpoint), `fast` a clean shutdown."""
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def create_database(self) -> None:
        self._run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "amy"])

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class CeleryWorker(ManagedProcess):
    """`celery -A amy worker` on both queues (prefork). With log level INFO, start() waits for the
    worker's "ready" line; quieter workers are left to come up while the caller goes on."""

    def __init__(
        self,
        env: dict[str, str] | None,
        concurrency: int = 2,
        *,
        name: str = "worker",
        queues: Iterable[str] = WORKER_QUEUES,
        include: Iterable[str] = (),
        log_level: str = "INFO",
        log_path: Path | None = None,
    ) -> None:
        self.node_name = f"{name}-{free_port()}-{os.getpid()}@{socket.gethostname()}"
        self.queues = tuple(queues)
        self.log_level = log_level
        self.consuming = True
        includes = [arg for module in include for arg in ("--include", module)]
        super().__init__(
            name,
            [
                str(BIN / "celery"),
                *("-A", "amy", "worker"),
                *("-Q", ",".join(self.queues)),
                *("-P", "prefork"),
                *("-c", str(concurrency)),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                *includes,
                *("-l", log_level),
                *("-n", self.node_name),
            ],
            env,
            log_path,
        )

    def start(self) -> None:
        offset = len(self.log())
        super().start()
        if self.log_level.upper() in ("DEBUG", "INFO"):
            wait_for(lambda: "ready" in self.log()[offset:], 60, "the Celery worker to be ready", interval=0.1)

    def pool_children(self) -> list[int]:
        return self.children()

    def set_consuming(self, consuming: bool, app: Any) -> None:
        """Start or stop taking messages from its queues (Celery's remote control, through `app`'s
        broker). Stopping also waits for the tasks it is running to end; starting first empties
        the queues of what was published while it did not consume."""
        if consuming == self.consuming or not self.is_running():
            return
        control = app.control
        if consuming:
            with app.connection_for_write() as connection:
                for queue in self.queues:
                    with contextlib.suppress(Exception):
                        connection.default_channel.queue_purge(queue)
            for queue in self.queues:
                control.add_consumer(queue, destination=[self.node_name], reply=True, timeout=10)
        else:
            for queue in self.queues:
                control.cancel_consumer(queue, destination=[self.node_name], reply=True, timeout=10)

            def idle() -> bool:
                active = control.inspect(destination=[self.node_name], timeout=5).active() or {}
                return not any(active.values())

            wait_for(idle, 60, "the live worker to finish its tasks", interval=0.1)
        self.consuming = consuming


class Gunicorn(ManagedProcess):
    """gunicorn serving amy.wsgi with sync workers. start() returns once /healthz answers one of
    `ready_statuses` `ready_checks` times in a row (several checks reach several workers).

    With `access_log`, each request's line is `access_log_format`; server_latencies_ms() reads it.
    """

    def __init__(
        self,
        env: dict[str, str] | None,
        workers: int = 2,
        *,
        config: Path | None = None,
        access_log: Path | None = None,
        access_log_format: str = "%({x-bench-phase}i)s %(s)s %(D)s",
        log_path: Path | None = None,
        ready_statuses: tuple[int, ...] = (200, 503),
        ready_checks: int = 1,
    ) -> None:
        self.port = free_port()
        self.access_log = access_log
        self.ready_statuses = ready_statuses
        self.ready_checks = ready_checks
        command = [str(BIN / "gunicorn"), "amy.wsgi"]
        if config is not None:
            command += ["--config", str(config)]
        command += [
            *("--bind", f"127.0.0.1:{self.port}"),
            *("--workers", str(workers)),
            *("--timeout", "30"),
            "--no-control-socket",
        ]
        if access_log is not None:
            command += ["--access-logfile", str(access_log), "--access-logformat", access_log_format]
        super().__init__("gunicorn", command, env, log_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        self.check()
        return all(
            httpx.get(f"{self.url}/healthz", timeout=2).status_code in self.ready_statuses
            for _ in range(self.ready_checks)
        )

    def start(self) -> None:
        super().start()
        try:
            wait_for(self._ready, 30, f"gunicorn to answer /healthz (log: {self.log_path})", interval=0.1)
        except TimeoutError:
            self.check()  # a process that exited says so rather than timing out
            raise

    def server_latencies_ms(self, label: str) -> list[float]:
        """Request times gunicorn logged (%(D)s: from the parsed request to the last byte written)
        for the 200 answers to requests sent with `x-bench-phase: label`, sorted."""
        values = []
        if self.access_log is not None:
            with contextlib.suppress(FileNotFoundError), self.access_log.open() as lines:
                for line in lines:
                    parts = line.split()
                    if len(parts) == 3 and parts[0] == label and parts[1] == "200":
                        values.append(int(parts[2]) / 1000)
        return sorted(values)


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """`manage.py <args>` under `env`; its stdout, or RuntimeError with its output."""
    result = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@contextlib.contextmanager
def running(*processes: ManagedProcess) -> Iterator[None]:
    """Start each process in turn; kill them all, last first, on the way out."""
    try:
        for process in processes:
            process.start()
        yield
    finally:
        for process in reversed(processes):
            process.kill()
