"""Reading what sits on a Redis-backed queue, as kombu stored it."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis


def _body(raw: bytes) -> Any:
    message = json.loads(raw)
    body = message["body"]
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    return json.loads(body)


def queued_task_kwargs(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """The kwargs of each Celery task message on `queue` (protocol 2: [args, kwargs, embed])."""
    return [_body(raw)[1] for raw in client.lrange(queue, 0, -1)]


def queued_messages(client: redis.Redis, queue: str) -> list[Any]:
    """The decoded bodies of plain (non-task) messages on `queue`."""
    return [_body(raw) for raw in client.lrange(queue, 0, -1)]
