"""A bounded soak (about a minute): real gunicorn and Celery worker on the test database and a
private redis-server, distinct signed webhooks sent open-loop at a steady rate and then in bursts,
with the pieces of bench/soak.py (bench/pipeline.py). It asserts the books, not speed: every body
answered 200 is one ledger row, processed or visibly dead-lettered, with exactly the typed rows its
body makes; and no process's memory grows past a generous bound.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from bench.pipeline import (
    Bodies,
    RssSampler,
    Sender,
    Tracker,
    account,
    memory_growth,
    send_burst,
    send_steady,
    setup_user,
    warm_up,
)
from harness.books import wait_final
from tests.conftest import database_url_for_tests
from tests.live import CeleryWorker, Gunicorn, RedisServer, service_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

RATE = 30.0  # webhooks per second, steady
STEADY_SECONDS = 25.0
BURSTS = 2
BURST_SIZE = 100
BURST_GAP_SECONDS = 3.0
# Generous: the benchmark's bound is 20 MiB over 5 minutes; a test must not fail on a noisy
# machine's allocator, only on a leak that grows with the number of events.
GROWTH_BOUND_MIB = 50.0


def test_a_bounded_soak_loses_nothing_duplicates_nothing_and_memory_stays_flat(django_db_setup: None) -> None:
    # given: a user with its Terra connections, a web and a worker on a private Redis
    setup = setup_user()
    redis_server = RedisServer()
    redis_server.start()
    env = service_env(
        database_url=database_url_for_tests(),
        redis_url=redis_server.url,
        AMY_USER_RATE_PER_MINUTE="1000000",
        LOG_LEVEL="WARNING",
    )
    secret = env["TERRA_WEBHOOK_SECRET"].split(",")[0]
    web, worker = Gunicorn(env), CeleryWorker(env)
    tracker = Tracker()
    try:
        web.start()
        worker.start()
        assert web.process is not None
        assert worker.process is not None
        after_id = warm_up(web.url, tracker, database_url_for_tests(), secret, 20)
        sampler = RssSampler(gunicorn_pid=web.process.pid, celery_pid=worker.process.pid, interval=1.0)
        sender = Sender(web.url, secret, tracker, threads=BURST_SIZE + 16, label="soak-test")
        steady = round(RATE * STEADY_SECONDS)
        bodies = Bodies().many(steady + BURSTS * BURST_SIZE)

        # when: a steady rate, then bursts, then every row final
        start = time.monotonic()
        sampler.start()
        send_steady(sender, bodies[:steady], rate=RATE)
        for n in range(BURSTS):
            first = steady + n * BURST_SIZE
            send_burst(sender, bodies[first : first + BURST_SIZE], first_index=first)
            time.sleep(BURST_GAP_SECONDS)
        sender.close()
        with psycopg.connect(database_url_for_tests(), autocommit=True) as conn:
            not_final = wait_final(conn, after_id, 90)
            end = time.monotonic()
            sampler.stop()
            books = account(conn, tracker, after_id=after_id, rows_per_type=setup["rows_per_type"])
    finally:
        worker.kill()
        web.kill()
        redis_server.kill()

    # then: the books balance
    report = "\n".join(books.lines())
    assert not_final == 0, report
    assert books.answered_200 >= 0.9 * books.sent, report
    assert books.problems(every_body_answered=False) == [], report
    # and: no process grew past the bound from the first half of the run to the second
    growth = memory_growth(sampler.samples, start, end)
    assert {g.name.split(" ")[0] for g in growth} == {"gunicorn", "celery"}
    grown = [
        f"{g.name}: {g.first_mib:.1f} -> {g.second_mib:.1f} MiB" for g in growth if g.growth_mib > GROWTH_BOUND_MIB
    ]
    assert not grown, grown
