"""A steady stream of signed Terra webhooks against a live gunicorn, and what each body was answered.

Terra's side of a fault: it posts distinct bodies at a steady rate, waits at most 8 s for each
answer, and delivers again every body that was not answered 2xx (a non-2xx status, a reset
connection or a timeout) once the fault has cleared. Each body's attempts are recorded so that
the accounting can compare "answered 200" with what the ledger holds.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import httpx

from tests.terra import sample, signed_headers

# One log line per request would bury a scenario's own output.
logging.getLogger("httpx").setLevel(logging.WARNING)

TERRA_PUSH_TIMEOUT = 8.0  # Terra gives up on an answer after 8 s

# The Terra user of auth_success.json: once its auth event is processed, data events naming it
# are written for our user instead of parked.
TERRA_USER = {
    "user_id": "7c0d2f1e-3b8a-4e5d-9f60-1a2b3c4d5e6f",
    "provider": "OURA",
    "reference_id": "user_2pQm9XkL4vN8rT1sYb6WcZ3eHdA",
    "scopes": "daily,heartrate,personal,session,sleep,spo2,workout",
    "created_at": "2026-11-24T09:58:12.401553+00:00",
    "last_webhook_update": None,
    "active": True,
}
_DAILY = json.loads(sample("daily"))
_SLEEP = json.loads(sample("sleep"))
_FIRST_DAY = date(2000, 1, 1)


def auth_body(terra_user_id: str = TERRA_USER["user_id"]) -> bytes:
    """Terra's auth success for `terra_user_id` under our test user."""
    payload = json.loads(sample("auth_success"))
    payload["user"]["user_id"] = terra_user_id
    return json.dumps(payload).encode()


def daily_body(n: int) -> bytes:
    """A daily event whose one day (the n-th after 2000-01-01) no other body of the run names."""
    payload = copy.deepcopy(_DAILY)
    payload["user"] = TERRA_USER
    day = _FIRST_DAY + timedelta(days=n)
    payload["data"][0]["metadata"]["start_time"] = f"{day.isoformat()}T00:00:00.000000+00:00"
    payload["data"][0]["metadata"]["end_time"] = f"{(day + timedelta(days=1)).isoformat()}T00:00:00.000000+00:00"
    return json.dumps(payload).encode()


def sleep_body(n: int) -> bytes:
    """A sleep event with a summary id of its own."""
    payload = copy.deepcopy(_SLEEP)
    payload["user"] = TERRA_USER
    payload["data"][0]["metadata"]["summary_id"] = str(uuid.uuid5(uuid.NAMESPACE_OID, f"amy-fault-sleep-{n}"))
    return json.dumps(payload).encode()


def slow_body(n: int, seconds: float) -> bytes:
    """A test-only event (tests/fault_hooks.py) that keeps its worker busy for `seconds`."""
    return json.dumps({"type": "test.sleep", "seconds": seconds, "n": n}).encode()


def mixed_body(n: int) -> bytes:
    """The default stream: mostly daily events, every fourth a sleep event."""
    return sleep_body(n) if n % 4 == 3 else daily_body(n)


@dataclass
class Delivery:
    """One distinct body and every attempt to deliver it: "200", "503", ... or an exception name."""

    body: bytes
    attempts: list[str] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)  # the JSON of each 200
    refusals: list[dict[str, Any]] = field(default_factory=list)  # the JSON of each other answer

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    @property
    def accepted(self) -> bool:
        return "200" in self.attempts

    @property
    def first(self) -> str:
        return self.attempts[0] if self.attempts else "unsent"


def _record_answer(delivery: Delivery, response: httpx.Response) -> None:
    try:
        answer = response.json()
    except ValueError:
        answer = {"text": response.text[:200]}
    (delivery.answers if response.status_code == 200 else delivery.refusals).append(answer)


def _attempt(delivery: Delivery, post: Callable[[], httpx.Response]) -> str:
    """Run one delivery attempt and record its outcome: the status, or the transport error's name."""
    try:
        response = post()
    except httpx.HTTPError as exc:
        outcome = type(exc).__name__
    else:
        outcome = str(response.status_code)
        _record_answer(delivery, response)
    delivery.attempts.append(outcome)
    return outcome


def post_once(url: str, delivery: Delivery, *, timeout: float = TERRA_PUSH_TIMEOUT) -> str:
    """One signed attempt (signed now, as Terra signs each delivery); its outcome is recorded."""
    return _attempt(
        delivery, lambda: httpx.post(url, content=delivery.body, headers=signed_headers(delivery.body), timeout=timeout)
    )


class WebhookStream:
    """Posts `make_body(0)`, `make_body(1)`, ... at `rate` per second from a few sender threads
    (a slow answer does not hold the stream back), until stopped."""

    def __init__(
        self, webhook_url: str, make_body: Callable[[int], bytes] = mixed_body, *, rate: float = 10.0, senders: int = 8
    ) -> None:
        self.url = webhook_url
        self.make_body = make_body
        self.rate = rate
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=senders, thread_name_prefix="terra")
        self._thread = threading.Thread(target=self._run, name="terra-stream", daemon=True)
        self._next = 0

    def __enter__(self) -> WebhookStream:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop sending and wait for the answers of the bodies already sent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=True)

    def _run(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            delivery = self.add(self.make_body(self._next))
            self._next += 1
            self._pool.submit(post_once, self.url, delivery)
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def add(self, body: bytes) -> Delivery:
        """Record a body sent outside the steady stream (setup events, a concurrent burst)."""
        delivery = Delivery(body)
        with self._lock:
            self.deliveries.append(delivery)
        return delivery

    def send(self, body: bytes) -> Delivery:
        """Deliver one body now, synchronously, as part of the run."""
        delivery = self.add(body)
        post_once(self.url, delivery)
        return delivery

    def sent_since(self, count: int) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries[count:])

    def wait_sent(self, count: int, timeout: float = 30) -> None:
        """Wait until `count` more bodies have been answered (whatever the answer)."""
        target = len(self.deliveries) + count
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                done = sum(1 for d in self.deliveries[:target] if d.attempts)
            if len(self.deliveries) >= target and done >= target:
                return
            time.sleep(0.05)
        raise TimeoutError(f"timed out after {timeout} s waiting for {count} more answers")

    def redeliver(self, *, rounds: int = 6, pause: float = 1.0) -> int:
        """Deliver again, as Terra does after the fault, every body never answered 200; returns how
        many bodies needed it. Stops after `rounds` passes (the accounting then shows the rest)."""
        pending = [d for d in self.deliveries if not d.accepted]
        needed = len(pending)
        for _ in range(rounds):
            if not pending:
                break
            for delivery in pending:
                post_once(self.url, delivery)
            pending = [d for d in pending if not d.accepted]
            if pending:
                time.sleep(pause)
        return needed

    def first_outcomes(self) -> Counter[str]:
        return Counter(d.first for d in self.deliveries)


def deliver_concurrently(url: str, delivery: Delivery, copies: int) -> list[str]:
    """Post the same body `copies` times at once (each signed, all released together); the
    outcomes, also recorded on the delivery."""
    barrier = threading.Barrier(copies)

    def one() -> str:
        barrier.wait(timeout=30)
        return post_once(url, delivery)

    with ThreadPoolExecutor(max_workers=copies) as pool:
        return list(pool.map(lambda _: one(), range(copies)))


def _halves(body: bytes, pause: float) -> Iterator[bytes]:
    half = len(body) // 2
    yield body[:half]
    time.sleep(pause)
    yield body[half:]


def post_slowly(url: str, delivery: Delivery, pause: float) -> str:
    """One attempt whose body arrives in two halves `pause` s apart: a request a web worker is
    still reading (and holding) for that long. Recorded like any other attempt."""
    headers = {**signed_headers(delivery.body), "content-length": str(len(delivery.body))}
    return _attempt(
        delivery,
        lambda: httpx.post(url, content=_halves(delivery.body, pause), headers=headers, timeout=TERRA_PUSH_TIMEOUT),
    )
