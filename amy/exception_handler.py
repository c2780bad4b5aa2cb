"""Every failure on a non-webhook path becomes the envelope: DRF views, plain views, 404, 500."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response

from amy.errors import ApiError, ErrorCode, error_body, error_response

logger = logging.getLogger(__name__)

_DRF_CODES = {
    drf_exceptions.NotAuthenticated: ErrorCode.MISSING_AUTHORIZATION,
    drf_exceptions.AuthenticationFailed: ErrorCode.INVALID_TOKEN,
    drf_exceptions.PermissionDenied: ErrorCode.FORBIDDEN,
    drf_exceptions.NotFound: ErrorCode.NOT_FOUND,
    drf_exceptions.MethodNotAllowed: ErrorCode.METHOD_NOT_ALLOWED,
    drf_exceptions.Throttled: ErrorCode.RATE_LIMIT_EXCEEDED,
    drf_exceptions.UnsupportedMediaType: ErrorCode.INVALID_REQUEST,
    drf_exceptions.ParseError: ErrorCode.INVALID_REQUEST,
    drf_exceptions.ValidationError: ErrorCode.INVALID_REQUEST,
}


def drf_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApiError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if isinstance(exc, drf_exceptions.APIException):
        code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), ErrorCode.INVALID_REQUEST)
        details = {"fields": exc.detail} if isinstance(exc, drf_exceptions.ValidationError) else None
        message = exc.detail if isinstance(exc.detail, str) else "The request is not valid."
        response = Response(error_body(code, str(message), details), status=exc.status_code)
        wait = exc.wait if isinstance(exc, drf_exceptions.Throttled) else None  # type: ignore[attr-defined]
        if wait is not None:
            response["Retry-After"] = str(int(wait) + 1)
        return response
    # Anything else is ours to fix: logged with its traceback, answered as the envelope.
    return None


@csrf_exempt  # the catch-all answers every method, and a 404 needs no CSRF token
def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(ErrorCode.NOT_FOUND, "No such path.", 404)


def csrf_failure(request: HttpRequest, reason: str = "") -> JsonResponse:
    # Only the session-authenticated console uses CSRF; the API and the webhook are exempt.
    return error_response(ErrorCode.FORBIDDEN, "CSRF verification failed.", 403)


def server_error(request: HttpRequest) -> JsonResponse:
    return error_response(ErrorCode.INTERNAL_ERROR, "Something went wrong on our side.", 500)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(ErrorCode.INVALID_REQUEST, "The request is not valid.", 400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(ErrorCode.FORBIDDEN, "Not allowed.", 403)
