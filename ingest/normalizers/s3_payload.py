"""Terra's ping mode (`s3_payload`): fetch the body a pre-signed URL points at, into the ledger.

The fetched body becomes its own ledger row (`source = "s3_payload"`, `parent_id` = this row,
the same dedup as a webhook), published after commit and normalized as if Terra had pushed it;
this row is marked `skipped:s3_payload_fetched`, so a renormalize never needs the expired link.

The network fetch is a service (ingest/services/payload_fetch.py: only the origins in
AMY_S3_PAYLOAD_HOSTS, no private addresses unless listed, no redirects, bounded in time and size);
here the ping's url is checked and the fetched body parsed. The fetch runs inside the worker's
transaction (the row lock is held meanwhile), so its time bound is the lock's.
"""

from __future__ import annotations

import logging
from typing import TypeGuard
from urllib.parse import urlsplit

from ingest.classify import classify
from ingest.errors import BadData
from ingest.json_object import NotAJsonObject, parse_json_object
from ingest.models import RawEvent, RawEventSource
from ingest.normalizers.base import EventContext, Outcome, skipped
from ingest.publish import publish_after_commit
from ingest.services.payload_fetch import payload_fetch
from ingest.services.webhook import DeliveryHeaders, dedup_key_for, raw_event_insert

logger = logging.getLogger(__name__)

FETCHED = "s3_payload_fetched"


def normalize(context: EventContext) -> Outcome:
    url = context.payload.get("url")
    if not _is_http_url(url):
        raise BadData("url is missing or not an http(s) URL")
    body = payload_fetch(url)

    try:
        body_text, parsed = parse_json_object(body)
    except NotAJsonObject as exc:
        raise BadData(f"fetched payload is {exc.reason}") from exc
    classification = classify(parsed)
    if classification.event_type == "s3_payload":
        raise BadData("fetched payload is itself an s3_payload")

    # The fetched record keeps the ping's delivery headers: its ordering timestamp decides which
    # copy of a record wins, and the trace id and terra-reference correlate it.
    parent = RawEvent.objects.filter(pk=context.raw_event_id).values("trace_id", "terra_reference").first()
    child_id = raw_event_insert(
        body_text=body_text,
        dedup_key=dedup_key_for(body),
        classification=classification,
        request_id=context.request_id or "",
        headers=DeliveryHeaders(
            trace_id=parent["trace_id"] if parent else None,
            terra_reference=parent["terra_reference"] if parent else None,
            ordering_ts=context.ordering_ts,
        ),
        signature_verified=True,  # the link came in our signed webhook
        source=RawEventSource.S3_PAYLOAD,
        parent_id=context.raw_event_id,
    )
    if child_id is None:
        logger.info("raw_event %d: fetched %s payload is a duplicate", context.raw_event_id, classification.event_type)
    else:
        logger.info("raw_event %d: fetched payload stored as raw_event %d", context.raw_event_id, child_id)
        publish_after_commit(child_id, context.request_id)
    return skipped(FETCHED)


def _is_http_url(url: object) -> TypeGuard[str]:
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
