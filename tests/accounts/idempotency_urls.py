"""A POST endpoint that counts its runs, to observe what Idempotency-Key replays."""

from __future__ import annotations

import hashlib
import itertools
import threading

from django.urls import path
from django.utils import timezone
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import IdempotencyKey

runs = itertools.count(1)
# For SlowApi: set when a run has started, and what lets it finish.
started = threading.Event()
release = threading.Event()


class EchoApi(APIView):
    def post(self, request: Request) -> Response:
        if request.data.get("fail"):
            return Response({"error": "boom"}, status=503)
        if request.data.get("throttled"):
            return Response({"error": "slow down"}, status=429)
        return Response({"run": next(runs), "body": request.data}, status=201)


class UploadApi(APIView):
    parser_classes = [MultiPartParser]

    def post(self, request: Request) -> Response:
        files = {name: hashlib.sha256(file.read()).hexdigest() for name, file in request.FILES.items()}
        running = IdempotencyKey.objects.filter(key=request.headers.get("Idempotency-Key", "")).first()
        return Response(
            {
                "run": next(runs),
                "fields": request.POST.dict(),
                "files": files,
                "claim_seconds": (running.locked_until - timezone.now()).total_seconds() if running else None,
            },
            status=201,
        )


class SlowApi(APIView):
    """Runs until the test releases it, to observe a key while its first request still runs."""

    def post(self, request: Request) -> Response:
        started.set()
        release.wait(timeout=60)
        return Response({"run": next(runs)}, status=201)


urlpatterns = [
    path("v1/slow", SlowApi.as_view()),
    path("v1/echo", EchoApi.as_view()),
    path("v1/auth/echo", EchoApi.as_view()),
    path("v1/upload", UploadApi.as_view()),
]
