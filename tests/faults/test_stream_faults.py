"""Fault scenarios under a steady stream of signed webhooks, each on its own private stack.

Each scenario starts a private PostgreSQL cluster, redis-server, gunicorn and Celery worker
(tests/faults/stack.py), streams distinct Terra bodies at it (tests/faults/stream.py), breaks one
process while the stream runs, lets the fault clear, redelivers what Terra would redeliver, runs
the drain by hand, and ends with the accounting (tests/faults/accounting.py): every body answered
200 is exactly one ledger row, every row is processed or visibly dead, no typed row is duplicated.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from tests.fault_hooks import COMPLETED_KEY
from tests.faults.accounting import ledger_rows_of
from tests.faults.conftest import MakeStack
from tests.faults.stack import UNFINISHED_SQL
from tests.faults.stream import (
    WebhookStream,
    daily_body,
    deliver_concurrently,
    mixed_body,
    post_once,
    post_slowly,
    slow_body,
)
from tests.live import CeleryWorker, wait_for

pytestmark = pytest.mark.live


def test_worker_sigkilled_mid_batch_loses_and_duplicates_nothing(make_stack: MakeStack) -> None:
    # given: a stream whose every twentieth event keeps a worker process busy for two seconds
    stack = make_stack()

    def body(n: int) -> bytes:
        return slow_body(n, 2.0) if n % 20 == 10 else mixed_body(n)

    in_flight: list[int] = []

    def slow_events_running() -> bool:
        rows = stack.sql("SELECT id FROM raw_events WHERE state = 'processing' AND event_type = 'test.sleep'")
        in_flight[:] = [row[0] for row in rows]
        return bool(in_flight)

    with stack.stream(body) as stream:
        stack.connect_terra_user(stream)
        stream.wait_sent(15)
        # when: the whole worker (main process and pool) is SIGKILLed in the middle of a slow event
        wait_for(slow_events_running, 30, "a slow event being processed", interval=0.05)
        stack.worker.kill()
        stack.note(f"worker SIGKILLed while processing {in_flight}")
        # the ledger keeps accepting while no worker runs
        stream.wait_sent(15)
        stack.worker.start()
        stack.note("worker restarted")
        stream.wait_sent(15)

    # then: nothing lost, nothing written twice
    accounting = stack.settled_accounting(stream)
    assert accounting.first_outcomes == {"200": accounting.sent}
    # and the killed events were delivered again and ran to completion exactly once
    killed = stack.sql("SELECT state, attempts >= 2 FROM raw_events WHERE id = ANY(%s)", [in_flight])
    assert killed == [("processed", True)] * len(in_flight)
    client = redis.Redis.from_url(stack.redis.url)
    assert [int(client.get(COMPLETED_KEY.format(raw_event_id=i)) or 0) for i in in_flight] == [1] * len(in_flight)
    client.close()


def test_redis_killed_and_restarted_the_ledger_keeps_accepting_and_the_drain_catches_up(
    make_stack: MakeStack,
) -> None:
    # given
    stack = make_stack()
    with stack.stream() as stream:
        stack.connect_terra_user(stream)
        stream.wait_sent(20)
        # a slow event holds a worker process, so the worker has a message in flight (unacked)
        slow = stream.send(slow_body(10_000, 3.0))
        ((slow_id, _, _, _),) = ledger_rows_of(stack.database_url, [slow])
        wait_for(
            lambda: stack.scalar("SELECT state FROM raw_events WHERE id = %s", [slow_id]) == "processing",
            30,
            "the slow event to be processing",
        )
        # when: Redis dies (with every queued nudge: it keeps nothing on disk) while Terra posts
        before = len(stream.deliveries)
        stack.redis.kill()
        stack.note("redis killed")
        stream.wait_sent(30)
        during = stream.sent_since(before)
        # and comes back on the same port
        stack.redis.start()
        stack.note("redis restarted")
        stream.wait_sent(20)
        after = stream.deliveries[-1]

    # then: the webhook never needed Redis to answer 200
    assert [d.first for d in during] == ["200"] * len(during)
    # and the running worker consumes again on its own (no drain yet)
    ((after_id, _, _, _),) = ledger_rows_of(stack.database_url, [after])
    wait_for(
        lambda: stack.scalar("SELECT state FROM raw_events WHERE id = %s", [after_id]) == "processed",
        90,
        "the worker to process a body sent after Redis came back",
        interval=0.2,
    )
    stack.note("worker resumed on its own")
    assert "Unrecoverable error" not in stack.worker.log()
    # and the drain and the running worker (which reconnects on its own) get everything processed
    accounting = stack.settled_accounting(stream)
    assert accounting.first_outcomes == {"200": accounting.sent}
    assert stack.worker.is_running()


def test_a_hung_redis_never_holds_a_webhook_past_terras_timeout(make_stack: MakeStack) -> None:
    # given: the production cooldown after a failed publish (tests otherwise run without it)
    stack = make_stack(AMY_PUBLISH_COOLDOWN_SECONDS="5")
    with stack.stream() as stream:
        stack.connect_terra_user(stream)
        stream.wait_sent(10)
        # when: Redis accepts connections but never answers (SIGSTOP: a partition looks the same)
        assert stack.redis.process is not None
        os.kill(stack.redis.process.pid, signal.SIGSTOP)
        stack.note("redis stopped (SIGSTOP)")
        before = len(stream.deliveries)
        try:
            stream.wait_sent(40)
        finally:
            os.kill(stack.redis.process.pid, signal.SIGCONT)
        stack.note("redis continued")
        during = stream.sent_since(before)
        stream.wait_sent(10)

    # then: every body was answered 200 within Terra's 8 s (the publish is bounded and then skipped)
    assert [d.first for d in during] == ["200"] * len(during)
    # and the drain gets the rows whose publish was skipped processed
    accounting = stack.settled_accounting(stream)
    assert accounting.first_outcomes == {"200": accounting.sent}


def test_postgres_stopped_webhooks_get_503_nothing_half_written_and_redeliveries_are_accepted_once(
    make_stack: MakeStack,
) -> None:
    # given
    stack = make_stack()
    with stack.stream() as stream:
        stack.connect_terra_user(stream)
        stream.wait_sent(15)
        # when: PostgreSQL stops (a crash: no checkpoint) for a few seconds of deliveries
        stack.postgres.stop()
        stack.note("postgres stopped")
        before = len(stream.deliveries)
        stream.wait_sent(25)
        during = stream.sent_since(before)
        health = httpx.get(f"{stack.web.url}/healthz", timeout=8)
        stack.postgres.start()
        stack.note("postgres restarted")
        stream.wait_sent(20)

    # then: what arrived during the outage was refused with the webhook's 503, never a 200
    refused = [d for d in stream.deliveries if not d.accepted]
    assert refused
    assert {d.first for d in refused} == {"503"}
    assert {d.first for d in during} <= {"503", "200"}
    assert refused[0].refusals[0] == {"error": "unavailable", "request_id": refused[0].refusals[0]["request_id"]}
    assert (health.status_code, health.json()["error"]["code"]) == (503, "unavailable")
    # and nothing is half-written: no row of a refused body, every row's payload its body exactly
    halfway = stack.account(stream)
    stored_though_refused = [r for r in ledger_rows_of(stack.database_url, refused) if r[0] is not None]
    print(f"\nbefore Terra redelivers: {halfway}")  # noqa: T201
    assert (halfway.corrupt, halfway.unexpected, halfway.missing, len(stored_though_refused)) == (0, 0, 0, 0)
    # when: Terra redelivers the refused bodies, they are accepted, each stored once
    accounting = stack.settled_accounting(stream)
    redelivery_answers = [d.answers[0] for d in refused]
    assert all("raw_event_id" in answer for answer in redelivery_answers)
    assert accounting.redelivered == len(refused)


def test_a_web_worker_killed_mid_request_loses_nothing_and_terras_redelivery_is_stored_once(
    make_stack: MakeStack,
) -> None:
    # given
    stack = make_stack()
    with stack.stream() as stream:
        stack.connect_terra_user(stream)
        stream.wait_sent(15)
        # when: every gunicorn worker is SIGKILLed while one of them is still reading a request
        slow = stream.add(daily_body(50_000))
        sender = threading.Thread(target=post_slowly, args=(stack.webhook_url, slow, 3.0))
        sender.start()
        time.sleep(0.5)  # the first half of that body is on its way
        killed = stack.web.children()
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        stack.note(f"gunicorn workers {killed} SIGKILLed")
        sender.join(timeout=30)
        # the master starts new workers and the stream goes on
        stream.wait_sent(30)

    # then: the interrupted request got no answer, the later ones got theirs
    assert slow.first != "200"
    assert stack.web.is_running()
    assert [d.first for d in stream.deliveries[-10:]] == ["200"] * 10
    # and after Terra's redelivery of everything not answered, the books balance
    accounting = stack.settled_accounting(stream)
    assert slow.accepted
    print(f"first answers: {dict(accounting.first_outcomes)}")  # noqa: T201


def test_the_same_body_delivered_50_times_concurrently_is_stored_and_written_once(make_stack: MakeStack) -> None:
    # given: a steady stream of other bodies
    stack = make_stack()
    with stack.stream() as stream:
        stack.connect_terra_user(stream)
        stream.wait_sent(10)
        # when: one body arrives 50 times at once (each delivery signed anew, as Terra signs)
        burst = stream.add(daily_body(100_000))
        outcomes = deliver_concurrently(stream.url, burst, 50)
        stack.note("50 concurrent deliveries answered")
        stream.wait_sent(10)

    # then: 50 answers of 200, exactly one of which stored it
    assert outcomes == ["200"] * 50
    stored = [answer for answer in burst.answers if "raw_event_id" in answer]
    assert len(stored) == 1
    assert sum(answer.get("duplicate") is True for answer in burst.answers) == 49
    accounting = stack.settled_accounting(stream)
    ((raw_event_id, state, attempts, _),) = ledger_rows_of(stack.database_url, [burst])
    assert (raw_event_id, state, attempts) == (stored[0]["raw_event_id"], "processed", 1)
    assert stack.scalar("SELECT count(*) FROM daily_summary WHERE raw_event_id = %s", [raw_event_id]) == 1
    assert accounting.attempts == accounting.sent + 49


POISON = {
    10: {"type": "test.always_fail"},  # a transient failure on every delivery
    20: {"type": "test.kill_worker"},  # kills the worker process that runs it, every time
    30: {"type": "test.bad_data"},  # can never normalize
}


def test_poison_events_are_dead_lettered_after_the_configured_retries_never_retried_forever(
    make_stack: MakeStack,
) -> None:
    # given: a stack configured for 2 retries and 3 deliveries, and a stream carrying poison
    stack = make_stack(AMY_MAX_RETRIES="2", AMY_MAX_DELIVERIES="3")

    def body(n: int) -> bytes:
        return json.dumps({**POISON[n], "n": n}).encode() if n in POISON else mixed_body(n)

    with stack.stream(body) as stream:
        stack.connect_terra_user(stream)
        stream.wait_sent(45)

    # then: every poison event is visibly dead, each after what the configuration allows
    accounting = stack.settled_accounting(stream)
    poison = [d for d in stream.deliveries if json.loads(d.body).get("type", "").startswith("test.")]
    poison_rows = ledger_rows_of(stack.database_url, poison)
    rows = {json.loads(d.body)["type"]: row for d, row in zip(poison, poison_rows, strict=True)}
    assert {t: row[1:] for t, row in rows.items()} == {
        "test.always_fail": ("dead", 3, "retries_exhausted: ConnectionError: upstream unavailable (test)"),
        "test.kill_worker": ("dead", 4, "max_deliveries"),
        "test.bad_data": ("dead", 1, "bad_data: impossible payload (test)"),
    }
    assert accounting.states == {"processed": accounting.sent - 3, "dead": 3}
    # and never retried again: the drain leaves dead rows alone, and no message is left to run them
    assert stack.drain().startswith("selected 0,")
    time.sleep(2)
    assert [row[1:] for row in ledger_rows_of(stack.database_url, poison)] == [rows[t][1:] for t in rows]
    assert stack.worker.is_running()
    # each dead letter has its copy on terra-events-dlq for operators' tools
    client = redis.Redis.from_url(stack.redis.url)
    assert client.llen("terra-events-dlq") == 3


def post_all(stream: WebhookStream, bodies: list[bytes]) -> None:
    """Deliver these bodies now, eight at a time, as part of the run (every one answered 200)."""
    deliveries = [stream.add(body) for body in bodies]
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda delivery: post_once(stream.url, delivery), deliveries))
    assert set(outcomes) == {"200"}


def test_after_a_lost_queue_one_drain_run_gets_the_whole_backlog_processed(make_stack: MakeStack) -> None:
    # given: a drain that nudges one row per run, short time slices and small batches, so that the
    # backlog below is many slices and many batches for the workers
    stack = make_stack(AMY_DRAIN_LIMIT="1", AMY_NORMALIZE_BATCH_SECONDS="0.5", AMY_NORMALIZE_BATCH_SIZE="20")
    stream = stack.stream()
    stack.connect_terra_user(stream)
    # while no worker runs, a backlog is stored
    stack.worker.kill()
    stack.note("worker killed")
    post_all(stream, [mixed_body(n) for n in range(400)])
    # when: Redis restarts empty (every nudge lost), the worker comes back, and the drain runs once
    stack.redis.kill()
    stack.redis.start()
    stack.worker.start()
    stack.note("redis restarted empty, worker restarted")
    waiting = stack.scalar(UNFINISHED_SQL)
    assert waiting >= 400
    assert stack.drain().startswith("selected 1, published 1,")
    # then: the workers carry the whole backlog on their own, with no second drain
    wait_for(lambda: stack.scalar(UNFINISHED_SQL) == 0, 120, "the backlog to be processed", interval=0.2)
    stack.note(f"{waiting} waiting rows processed after one drain run")
    print(f"\ntimeline: {'; '.join(stack.timeline)}")  # noqa: T201 - the figures
    assert len(stack.drains) == 1
    accounting = stack.account(stream)
    assert accounting.problems() == [], str(accounting)


PROCESSED_LINE = re.compile(r"raw_event \d+ processed")

# Each day's typed row, and the values and id of that day's last ledger row.
LAST_VERSIONS_SQL = """
SELECT d.steps, d.raw_event_id, (w.payload::jsonb #>> '{data,0,distance_data,steps}')::int, w.id
FROM daily_summary d
JOIN LATERAL (
    SELECT id, payload FROM raw_events r
    WHERE r.event_type = 'daily' AND left(r.payload::jsonb #>> '{data,0,metadata,start_time}', 10)::date = d.date
    ORDER BY id DESC LIMIT 1
) w ON true
ORDER BY d.date
"""


def colliding_daily_body(n: int) -> bytes:
    """Version n of one of ten days: four versions of each day, in flight together."""
    payload = json.loads(daily_body(n % 10))
    payload["data"][0]["distance_data"]["steps"] = n
    return json.dumps(payload).encode()


def test_two_worker_nodes_on_colliding_rows_process_every_event_once_without_deadlocks(
    make_stack: MakeStack,
) -> None:
    # given: a backlog of events that update the same ten rows, stored while no worker runs, and
    # a drain that nudges one row per run
    stack = make_stack(AMY_NORMALIZE_BATCH_SIZE="10", AMY_DRAIN_LIMIT="1")
    stream = stack.stream()
    stack.connect_terra_user(stream)
    stack.worker.kill()
    post_all(stream, [colliding_daily_body(n) for n in range(400)])
    deadlocks_before = stack.scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = 'amy'")
    # when: two worker nodes (two processes each) are up and idle (the queue lost), and one nudge
    # reaches one of them
    redis.Redis.from_url(stack.redis.url).delete("terra-events")
    other = CeleryWorker(stack.env, 2, name="other-node")
    try:
        stack.worker.start()
        other.start()
        stack.note(f"nodes {stack.worker.node_name} and {other.node_name} up")
        assert stack.drain().startswith("selected 1, published 1,")
        wait_for(lambda: stack.scalar(UNFINISHED_SQL) == 0, 120, "the backlog to be processed", interval=0.2)
        stack.note("backlog processed")
        logs = stack.worker.log() + other.log()
        # both nodes took part: a full claim brings another worker in
        assert PROCESSED_LINE.search(stack.worker.log())
        assert PROCESSED_LINE.search(other.log())
    finally:
        other.kill()
        stack.worker.kill()  # its database sessions end, so their statistics are flushed
    # then: every event processed, each by one delivery (a second one only where a worker process
    # was killed for running past the test's 8 s time limit, which a starved machine can cause)
    assert stack.sql("SELECT DISTINCT state FROM raw_events") == [("processed",)]
    redelivered = stack.scalar("SELECT count(*) FROM raw_events WHERE attempts > 1")
    stack.note(f"{redelivered} events delivered more than once")
    if redelivered:
        assert "Hard time limit" in logs or "WorkerLostError" in logs, redelivered
    # and the books balance (one typed row per day: the events' rows collide, see below)
    accounting = stack.account(stream)
    problems = [p for p in accounting.problems() if not p.startswith("typed rows missing")]
    assert problems == [], str(accounting)
    # and each row holds its last version (no ordering header: the ledger id decides)
    rows = stack.sql(LAST_VERSIONS_SQL)
    assert len(rows) == 10
    assert [(steps, raw_event_id) for steps, raw_event_id, _, _ in rows] == [(s, i) for _, _, s, i in rows]
    # and no transaction of either node deadlocked
    assert "deadlock detected" not in logs, [line for line in logs.splitlines() if "deadlock" in line][:5]
    wait_for(
        lambda: stack.scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = 'amy'") is not None,
        10,
        "the database's statistics",
    )
    assert stack.scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = 'amy'") == deadlocks_before
    print(f"\ntimeline: {'; '.join(stack.timeline)}")  # noqa: T201 - the figures
