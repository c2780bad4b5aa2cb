"""Distinct, realistic Terra bodies: the daily fixture with a new `user.user_id` each time.

Only standard library and Django-free project modules are imported here, so the baseline process
stays bare.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

from ingest.classify import classify

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "terra" / "daily.json"
WEBHOOK_SERVICE = ROOT / "ingest" / "services" / "webhook.py"


def insert_sql() -> str:
    """`_INSERT_SQL` of ingest/services/webhook.py, read from the source so that importing Django
    (which that module does) is not needed and the baseline runs the very same statement."""
    tree = ast.parse(WEBHOOK_SERVICE.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "_INSERT_SQL" for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise LookupError(f"_INSERT_SQL not found in {WEBHOOK_SERVICE}")


class BodyFactory:
    """Bodies for one thread of one phase: `user_id` = `<phase>-<thread>-4000-8000-<n>` (UUID-sized),
    so every body is a new ledger row (new dedup key, new terra_user_id) within and across phases."""

    def __init__(self, phase: int, thread: int) -> None:
        text = FIXTURE.read_text()
        template = json.loads(text)
        original = template["user"]["user_id"]
        if text.count(original) != 1:
            raise ValueError(f"{FIXTURE} must contain its user_id exactly once")
        self.prefix, self.suffix = text.split(original)
        classification = classify(template)
        self.event_type = classification.event_type
        self.provider = classification.provider
        self.reference_id = classification.reference_id
        self.stem = f"{phase:08x}-{thread:04x}-4000-8000-"
        self.count = 0

    def next(self) -> tuple[bytes, str]:
        """The next body and its terra user id."""
        user_id = f"{self.stem}{self.count:012x}"
        self.count += 1
        return (self.prefix + user_id + self.suffix).encode(), user_id


def dedup_key(body: bytes) -> str:
    # As ingest.services.webhook.dedup_key_for.
    return hashlib.sha256(body).hexdigest()
