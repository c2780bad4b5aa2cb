"""/healthz: a `SELECT 1` and nothing more (SPEC §6); deep checks live under /admin."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from amy.errors import ErrorCode, error_response
from amy.http import allow_methods

logger = logging.getLogger(__name__)


@csrf_exempt
@allow_methods("GET", "HEAD")
def healthz(request: HttpRequest) -> JsonResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        logger.warning("healthz: database not answering: %s", type(exc).__name__)
        return error_response(ErrorCode.UNAVAILABLE, "The database is not answering.", 503)
    return JsonResponse({"ok": True, "environment": settings.ENVIRONMENT})
