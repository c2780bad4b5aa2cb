"""Small HTTP helpers shared by plain (non-DRF) views."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse

from amy.errors import ErrorCode, error_response

View = Callable[..., HttpResponse]


def allow_methods(*methods: str) -> Callable[[View], View]:
    """Like Django's require_http_methods, but a refused method answers the JSON envelope."""

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                response = error_response(ErrorCode.METHOD_NOT_ALLOWED, f"{request.method} is not allowed here.", 405)
                response["Allow"] = ", ".join(methods)
                return response
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
