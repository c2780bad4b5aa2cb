"""Real processes for tests: private redis-server and PostgreSQL instances, Celery workers, gunicorn.

Every process is started in its own session and stopped by its process group, never by name, so
tests can kill what they started and leave the machine's shared servers alone. Everything listens
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: S110 - not ready yet
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def _kill_group(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGKILL) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=15)


class ManagedProcess:
    """A command in its own process group, its output in a log file the test can read."""

    def __init__(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log_path = Path(tempfile.mkstemp(prefix=f"amy-{name}-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        _kill_group(self.process, signal.SIGKILL)

    def terminate(self) -> None:
        _kill_group(self.process, signal.SIGTERM)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def children(self) -> list[int]:
        """The pids of the main process's direct children (gunicorn's or Celery's pool workers)."""
        assert self.process is not None
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]


class RedisServer(ManagedProcess):
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="amy-redis-")
        super().__init__(
            "redis",
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--maxmemory-policy",
                "noeviction",
            ],
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        super().start()
        import redis

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


def service_env(*, database_url: str, redis_url: str, **overrides: str) -> dict[str, str]:
    """The environment of a web or worker process under test: short timings, test secrets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMY_", "CELERY_", "DATABASE_", "REDIS_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "amy.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "ENVIRONMENT": "development",
            "TERRA_WEBHOOK_SECRET": os.environ.get("TERRA_WEBHOOK_SECRET", "test-secret"),
            "AMY_RETRY_BASE_SECONDS": "0.2",
            "AMY_RETRY_MAX_SECONDS": "1",
            "AMY_TASK_TIME_LIMIT": "8",
            "AMY_VISIBILITY_TIMEOUT": "12",
            "AMY_UNACKED_RESTORE_INTERVAL": "1",
            "AMY_PUBLISH_COOLDOWN_SECONDS": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


WORKER_QUEUES = ("terra-events", "amy")


class CeleryWorker(ManagedProcess):
    def __init__(self, env: dict[str, str], concurrency: int = 2) -> None:
        self.node_name = f"test-{free_port()}@{socket.gethostname()}"
        self.consuming = True
        super().__init__(
            "worker",
            [
                str(BIN / "celery"),
                "-A",
                "amy",
                "worker",
                "-Q",
                "terra-events,amy",
                "-P",
                "prefork",
                "-c",
                str(concurrency),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--include",
                "tests.fault_hooks",
                "-l",
                "INFO",
                "-n",
                self.node_name,
            ],
            env,
        )

    def start(self) -> None:
        offset = len(self.log()) if self.log_path.exists() else 0
        super().start()
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
                for queue in WORKER_QUEUES:
                    with contextlib.suppress(Exception):
                        connection.default_channel.queue_purge(queue)
            for queue in WORKER_QUEUES:
                control.add_consumer(queue, destination=[self.node_name], reply=True, timeout=10)
        else:
            for queue in WORKER_QUEUES:
                control.cancel_consumer(queue, destination=[self.node_name], reply=True, timeout=10)

            def idle() -> bool:
                active = control.inspect(destination=[self.node_name], timeout=5).active() or {}
                return not any(active.values())

            wait_for(idle, 60, "the live worker to finish its tasks", interval=0.1)
        self.consuming = consuming


class Gunicorn(ManagedProcess):
    def __init__(self, env: dict[str, str], workers: int = 2) -> None:
        self.port = free_port()
        super().__init__(
            "gunicorn",
            [
                str(BIN / "gunicorn"),
                "amy.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
                "--timeout",
                "30",
            ],
            env,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        wait_for(lambda: httpx.get(f"{self.url}/healthz", timeout=1).status_code in (200, 503), 30, "gunicorn")


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@contextlib.contextmanager
def running(*processes: ManagedProcess) -> Iterator[None]:
    try:
        for process in processes:
            process.start()
        yield
    finally:
        for process in reversed(processes):
            process.kill()
