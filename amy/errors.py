"""The error envelope: one hierarchy, stable codes, one way to render them."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from django.conf import settings
from django.http import JsonResponse

from amy.request_context import current_request_id


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    INVALID_FIELD = "invalid_field"
    MISSING_AUTHORIZATION = "missing_authorization"
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - an error code, not a secret
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNPROCESSABLE = "unprocessable"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    INTERNAL_ERROR = "internal_error"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UNAVAILABLE = "unavailable"
    # CLI login and idempotency
    AUTHORIZATION_PENDING = "authorization_pending"
    SLOW_DOWN = "slow_down"
    EXPIRED_TOKEN = "expired_token"  # noqa: S105 - an error code, not a secret
    INVALID_GRANT = "invalid_grant"
    IDEMPOTENCY_KEY_MISMATCH = "idempotency_key_mismatch"
    IDEMPOTENCY_KEY_IN_USE = "idempotency_key_in_use"
    ALREADY_QUEUED = "already_queued"


class ApiError(Exception):
    """An error a client can act on; rendered as the envelope by the exception handlers."""

    status = 400
    code: str = ErrorCode.INVALID_REQUEST

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details


def invalid_field(field: str, message: str) -> ApiError:
    """400 `invalid_field` naming the field (`details.field`): the one way to refuse a parameter."""
    return ApiError(message, code=ErrorCode.INVALID_FIELD, details={"field": field})


class NotFound(ApiError):
    status = 404
    code = ErrorCode.NOT_FOUND


class Unavailable(ApiError):
    status = 503
    code = ErrorCode.UNAVAILABLE


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {
        "code": str(code),
        "message": message,
        "request_id": current_request_id.get(),
        "docs_url": f"{settings.AMY_ERRORS_DOCS_URL}#{code}",
    }
    if details:
        error["details"] = details
    return {"error": error}


def error_response(code: str, message: str, status: int, details: dict[str, Any] | None = None) -> JsonResponse:
    return JsonResponse(error_body(code, message, details), status=status)


def api_error_response(exc: ApiError) -> JsonResponse:
    return error_response(exc.code, exc.message, exc.status, exc.details)
