"""A POST endpoint that counts its runs, to observe what Idempotency-Key replays."""

from __future__ import annotations

import itertools

from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

runs = itertools.count(1)


class EchoApi(APIView):
    def post(self, request: Request) -> Response:
        if request.data.get("fail"):
            return Response({"error": "boom"}, status=503)
        return Response({"run": next(runs), "body": request.data}, status=201)


urlpatterns = [path("v1/echo", EchoApi.as_view()), path("v1/auth/echo", EchoApi.as_view())]
