"""Request id in and out, and the envelope for exceptions that reach the top."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse

from amy.errors import ApiError, ErrorCode, api_error_response, error_response
from amy.request_context import accept_request_id, current_request_id

logger = logging.getLogger(__name__)

REQUEST_ID_HEADERS = ("x-amy-request-id", "X-Request-Id")


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("x-amy-request-id") or request.headers.get("x-request-id")
        request_id = accept_request_id(incoming)
        request.request_id = request_id  # type: ignore[attr-defined]
        token = current_request_id.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            current_request_id.reset(token)
        for header in REQUEST_ID_HEADERS:
            response[header] = request_id
        return response


class ErrorEnvelopeMiddleware:
    """Turns an exception a view let through into the envelope, whatever DEBUG says."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse:
        if isinstance(exception, ApiError):
            return api_error_response(exception)
        if isinstance(exception, Http404):
            return error_response(ErrorCode.NOT_FOUND, "Not found.", 404)
        if isinstance(exception, OperationalError | InterfaceError):
            logger.warning("database unavailable on %s: %s", request.path, type(exception).__name__)
            return error_response(ErrorCode.UNAVAILABLE, "The database is not answering; retry later.", 503)
        logger.error("unhandled error on %s %s", request.method, request.path, exc_info=exception)
        return error_response(ErrorCode.INTERNAL_ERROR, "Something went wrong on our side.", 500)
