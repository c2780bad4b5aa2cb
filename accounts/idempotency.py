"""`Idempotency-Key` on authenticated `POST /v1/*` (SPEC §1), kept in Redis for 24 h per user.

The same key with the same body replays the first response (marked `Idempotent-Replayed: true`);
the same key with another body answers 409 `idempotency_key_mismatch`; a second request with a
key whose first request is still running answers 409 `idempotency_key_in_use` (SPEC is silent on
that race; Stripe answers the same way). 5xx answers are not kept, so a retry after a failure
runs again. If Redis is down the request runs without idempotency rather than failing.

A middleware rather than a view mixin so every endpoint gets it the same way; it reads the bearer
token itself (the views authenticate again, cheaply) because the key is per user.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import Callable

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from redis.exceptions import RedisError

from accounts.authentication import user_for_token
from accounts.tokens import InvalidToken
from amy.errors import ErrorCode, error_response

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
TTL_SECONDS = 24 * 3600
_IN_PROGRESS_SECONDS = 60
_VALID_KEY = re.compile(r"[\x21-\x7e]{1,255}")
# Bodies larger than this are fingerprinted by their type and length only: the upload endpoints
# stream their bodies, and reading one whole here would defeat that.
_MAX_HASHED_BODY = 1024 * 1024


def _applies(request: HttpRequest) -> bool:
    return (
        request.method == "POST"
        and request.path.startswith("/v1/")
        and not request.path.startswith("/v1/auth/")
        and HEADER.lower() in {h.lower() for h in request.headers}
    )


def _user_id(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        user, _ = user_for_token(token.strip())
    except (InvalidToken, UnicodeError):
        return None
    return user.pk


def _fingerprint(request: HttpRequest) -> str:
    length = int(request.META.get("CONTENT_LENGTH") or 0)
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    if length <= _MAX_HASHED_BODY:
        digest.update(request.body)
    else:
        digest.update(f"{request.content_type} {length}".encode())
    return digest.hexdigest()


class IdempotencyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not _applies(request):
            return self.get_response(request)
        key = request.headers[HEADER]
        if not _VALID_KEY.fullmatch(key):
            return error_response(
                ErrorCode.INVALID_FIELD,
                "Idempotency-Key must be 1-255 printable ASCII characters.",
                400,
                {"field": HEADER},
            )
        user_id = _user_id(request)
        if user_id is None:
            return self.get_response(request)  # the view answers 401
        cache_key = f"idempotency:{hashlib.sha256(f'{user_id}:{key}'.encode()).hexdigest()}"
        fingerprint = _fingerprint(request)
        try:
            return self._once(request, cache_key, fingerprint)
        except RedisError as exc:
            logger.warning("idempotency store unavailable, request runs without it: %s", type(exc).__name__)
            return self.get_response(request)

    def _once(self, request: HttpRequest, cache_key: str, fingerprint: str) -> HttpResponse:
        claimed = cache.add(cache_key, json.dumps({"fingerprint": fingerprint}), _IN_PROGRESS_SECONDS)
        if not claimed:
            stored = json.loads(cache.get(cache_key) or "{}")
            if stored.get("fingerprint") != fingerprint:
                return error_response(
                    "idempotency_key_mismatch", "This Idempotency-Key was used with another request.", 409
                )
            if "status" not in stored:
                return error_response(
                    "idempotency_key_in_use", "A request with this Idempotency-Key is still running.", 409
                )
            response = HttpResponse(
                base64.b64decode(stored["content"]), status=stored["status"], content_type=stored["content_type"]
            )
            response["Idempotent-Replayed"] = "true"
            return response
        response = self.get_response(request)
        if response.status_code >= 500 or getattr(response, "streaming", False):
            cache.delete(cache_key)
            return response
        record = {
            "fingerprint": fingerprint,
            "status": response.status_code,
            "content_type": response.get("Content-Type", "application/json"),
            "content": base64.b64encode(response.content).decode(),
        }
        cache.set(cache_key, json.dumps(record), getattr(settings, "AMY_IDEMPOTENCY_SECONDS", TTL_SECONDS))
        return response
