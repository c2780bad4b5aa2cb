"""One private stack per fault scenario: its own PostgreSQL cluster, redis-server, gunicorn and
Celery worker, all started here so that a scenario may stop or kill any of them.

The cluster is a copy of one migrated once per session (`migrated_template`): a scenario starts
from an empty, migrated database in about a second instead of a `migrate` each.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.faults.accounting import Accounting, account, connect
from tests.faults.stream import TERRA_USER, Delivery, WebhookStream, auth_body, mixed_body
from tests.live import CeleryWorker, Gunicorn, PostgresCluster, RedisServer, manage, service_env, wait_for

UNFINISHED_SQL = "SELECT count(*) FROM raw_events WHERE state IN ('received', 'processing')"


def migrated_template() -> PostgresCluster:
    """A cluster holding the migrated `amy` database, stopped cleanly so its files can be copied."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        cluster.create_database()
        manage(service_env(database_url=cluster.url, redis_url="redis://127.0.0.1:1/0"), "migrate", "--no-input")
        cluster.stop(mode="fast")
    except BaseException:
        cluster.destroy()
        raise
    return cluster


@dataclass
class FaultStack:
    postgres: PostgresCluster
    redis: RedisServer
    web: Gunicorn
    worker: CeleryWorker
    env: dict[str, str]
    drains: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)
    timeline: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        """Mark a step of the scenario with its time since the stack started (printed at the end)."""
        self.timeline.append(f"{time.monotonic() - self.started_at:.1f}s {what}")

    @property
    def webhook_url(self) -> str:
        return f"{self.web.url}/webhooks/terra"

    @property
    def database_url(self) -> str:
        return self.postgres.url

    def stream(self, make_body: Callable[[int], bytes] = mixed_body, **options: Any) -> WebhookStream:
        return WebhookStream(self.webhook_url, make_body, **options)

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """One query on a fresh connection (the server may have been restarted since the last)."""
        with connect(self.database_url) as conn:
            return conn.execute(query, params).fetchall()

    def scalar(self, query: str, params: Any = None) -> Any:
        return self.sql(query, params)[0][0]

    def drain(self) -> str:
        """The five-minute drain, run now by hand (`manage.py drain_stuck_events`)."""
        lines = manage(self.env, "drain_stuck_events", timeout=60).splitlines()
        # The command's own line, among the JSON log lines on the same stdout.
        out = next(line for line in lines if line.startswith("selected "))
        self.drains.append(out)
        self.note(f"drain: {out}")
        return out

    def connect_terra_user(self, stream: WebhookStream, terra_user_id: str = TERRA_USER["user_id"]) -> Delivery:
        """Terra's auth event for the stream's user, delivered and processed: the user and the
        connection exist, so the stream's data events are written instead of parked."""
        delivery = stream.send(auth_body(terra_user_id))
        assert delivery.first == "200", delivery.attempts
        wait_for(
            lambda: self.scalar("SELECT count(*) FROM terra_connections WHERE terra_user_id = %s", [terra_user_id]),
            60,
            "the auth event to create the connection",
            interval=0.2,
        )
        return delivery

    def settle(self, *, timeout: float = 60, drain_every: float = 8) -> None:
        """Wait until no ledger row is left `received` or `processing`, running the drain by hand
        at once and then every `drain_every` s (what Beat would do every five minutes)."""
        deadline = time.monotonic() + timeout
        next_drain = time.monotonic()
        while True:
            if time.monotonic() >= next_drain:
                self.drain()
                next_drain = time.monotonic() + drain_every
            with contextlib.suppress(Exception):
                if self.scalar(UNFINISHED_SQL) == 0:
                    self.note("settled")
                    return
            if time.monotonic() >= deadline:
                states = self.sql("SELECT state, count(*) FROM raw_events GROUP BY 1")
                raise TimeoutError(f"ledger not settled after {timeout} s: {states}; drains {self.drains}")
            time.sleep(0.25)

    def account(self, stream: WebhookStream) -> Accounting:
        return account(self.database_url, stream.deliveries)

    def settled_accounting(self, stream: WebhookStream) -> Accounting:
        """Terra's redeliveries, the drain until the ledger settles, then the accounting, printed
        (pytest shows it with -s, and with any failure) and checked."""
        self.note(f"redelivered {stream.redeliver()} bodies")
        self.settle()
        accounting = self.account(stream)
        print(f"\naccounting: {accounting}\ntimeline: {'; '.join(self.timeline)}")  # noqa: T201 - the figures
        assert accounting.problems() == [], str(accounting)
        return accounting

    def stop(self) -> None:
        for process in (self.worker, self.web, self.redis):
            process.kill()
        self.postgres.destroy()


def start_stack(
    template: PostgresCluster, *, web_workers: int = 2, concurrency: int = 2, **overrides: str
) -> FaultStack:
    """A stack on a fresh copy of the migrated database; `overrides` go into both processes' env."""
    postgres = PostgresCluster(template=template.data)
    redis_server = RedisServer()
    env = service_env(database_url=postgres.url, redis_url=redis_server.url, **overrides)
    stack = FaultStack(postgres, redis_server, Gunicorn(env, workers=web_workers), CeleryWorker(env, concurrency), env)
    try:
        postgres.start()
        redis_server.start()
        stack.web.start()
        stack.worker.start()
    except BaseException:
        stack.stop()
        raise
    return stack
