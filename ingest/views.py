"""The Terra webhook: the signature header, then the raw bytes and their HMAC, JSON, ledger, answer."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from amy import metrics, tracing
from amy.errors import ErrorCode, error_response
from ingest.classify import classify, safe_text
from ingest.json_object import NotAJsonObject, parse_json_object
from ingest.services.webhook import DeliveryHeaders, raw_event_ingest
from ingest.signature import InvalidSignature, signature_body_verify, signature_header_check

logger = logging.getLogger(__name__)

_CHUNK = 256 * 1024


class BodyTooLarge(Exception):
    pass


def declared_length_over(request: HttpRequest, cap: int) -> bool:
    declared = request.META.get("CONTENT_LENGTH")
    return bool(declared and declared.isdigit() and int(declared) > cap)


def _body_stream(request: HttpRequest) -> Any:
    # Django bounds its stream by CONTENT_LENGTH, which a chunked body does not have: it would read
    # as empty. A server that ends the input at the last chunk says so (`wsgi.input_terminated`,
    # gunicorn does), and then its own stream is read, still under the cap.
    if not request.META.get("CONTENT_LENGTH") and request.META.get("wsgi.input_terminated"):
        return request.META["wsgi.input"]
    return request


def read_capped_body(request: HttpRequest, cap: int) -> bytes:
    """The request body, read as a stream and refused past `cap` bytes, chunked bodies included.

    `request.body` would compare the whole length with DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) and
    reject a valid multi-MB Terra payload; reading the stream ourselves keeps that limit for
    everything else.
    """
    if declared_length_over(request, cap):
        raise BodyTooLarge
    stream = _body_stream(request)
    chunks: list[bytes] = []
    size = 0
    while chunk := stream.read(_CHUNK):
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _delivery_headers(request: HttpRequest) -> DeliveryHeaders:
    ordering = request.headers.get("x-terra-ordering-timestamp", "").strip()
    return DeliveryHeaders(
        trace_id=safe_text(request.headers.get("x-terra-trace-id")),
        terra_reference=safe_text(request.headers.get("terra-reference")),
        ordering_ts=int(ordering) if ordering.isdigit() and len(ordering) <= 18 else None,
    )


def _flat_error(status: int, error: str, request_id: str, **extra: Any) -> JsonResponse:
    # The webhook keeps the source's flat error shape, not the envelope.
    tracing.warn("webhook_rejected", error, status=status, **extra)
    metrics.webhook_outcome(error)
    return JsonResponse({"error": error, **extra, "request_id": request_id}, status=status)


def _too_large(request_id: str, cap: int) -> JsonResponse:
    logger.warning("webhook rejected: body over %d bytes", cap)
    return _flat_error(413, "payload_too_large", request_id)


@method_decorator(csrf_exempt, name="dispatch")
class TerraWebhookView(View):
    http_method_names = ["post"]

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        response = error_response(ErrorCode.METHOD_NOT_ALLOWED, "Terra webhooks are POSTed.", 405)
        response["Allow"] = "POST"
        return response

    def post(self, request: HttpRequest) -> JsonResponse:
        request_id: str = request.request_id  # type: ignore[attr-defined]
        span = tracing.start("webhook")
        cap = settings.AMY_WEBHOOK_MAX_BYTES
        # Everything that needs no body is decided before any of it is read: the declared length,
        # then the signature header's shape and time window.
        if declared_length_over(request, cap):
            return _too_large(request_id, cap)
        header = request.headers.get("terra-signature") or request.headers.get("x-terra-signature")
        try:
            signature = signature_header_check(
                header, now=time.time(), tolerance=settings.TERRA_SIGNATURE_TOLERANCE_SECONDS
            )
            try:
                body = read_capped_body(request, cap)
            except BodyTooLarge:
                return _too_large(request_id, cap)
            signature_body_verify(body=body, parsed=signature, secrets=settings.TERRA_WEBHOOK_SECRETS)
        except InvalidSignature as exc:
            logger.warning("webhook rejected: invalid signature (%s)", exc.reason)
            return _flat_error(401, "invalid_signature", request_id, reason=exc.reason.value)

        try:
            body_text, parsed = parse_json_object(body)
        except NotAJsonObject:
            logger.warning("webhook rejected: body is not a JSON object")
            return _flat_error(400, "invalid_json", request_id)

        classification = classify(parsed)
        try:
            result = raw_event_ingest(
                body=body,
                body_text=body_text,
                classification=classification,
                request_id=request_id,
                headers=_delivery_headers(request),
            )
        except DatabaseError as exc:
            logger.error("webhook not stored, answering 503 so Terra retries: %s", type(exc).__name__)
            return _flat_error(503, "unavailable", request_id)

        metrics.webhook_outcome("duplicate" if result.is_duplicate else "accepted")
        if result.is_duplicate:
            logger.info("webhook duplicate of a stored %s event", result.event_type)
            span.end(type=result.event_type, duplicate=True)
            return JsonResponse({"ok": True, "duplicate": True, "type": result.event_type, "request_id": request_id})
        logger.info("webhook stored as raw_event %d (%s)", result.raw_event_id, result.event_type)
        span.end(raw_event_id=result.raw_event_id, type=result.event_type, duplicate=False)
        return JsonResponse(
            {"ok": True, "raw_event_id": result.raw_event_id, "type": result.event_type, "request_id": request_id}
        )
