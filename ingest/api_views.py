"""The CLI's account endpoints that report or change ingest's data.

`/v1/me` lives here rather than in `accounts` because it lists Terra connections, which ingest
owns: apps depend one way (ingest → accounts), so accounts cannot import them.

Terra failures answer `upstream_unavailable`: a timeout 504; Terra's 429 503 with its
Retry-After when it gave one; unreachable, 5xx or an unreadable answer 502. Terra refusing a
request (another 4xx) is 502 too: the caller's input was validated here, so a refusal means our
credentials or configuration are wrong, which the caller cannot fix. Without Terra credentials
the endpoints that need Terra answer 503.
"""

from __future__ import annotations

import logging
import re
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.erasure import user_erasure_request
from accounts.models import User
from amy.errors import ApiError, ErrorCode, NotFound, error_body, invalid_field
from amy.request_context import current_request_id
from ingest.models import TerraConnection
from ingest.services.erasure import erasure_publish
from ingest.services.terra_account import connect_session, connection_disconnect, connections_refresh_if_due
from ingest.terra_client import TerraError, TerraNotConfigured, TerraRejected, TerraUnavailable

logger = logging.getLogger(__name__)

PROVIDER_PATTERN = re.compile(r"[A-Z0-9_]{1,32}")
REDIRECT_URL_MAX_LENGTH = 2048
# http:// is allowed for these hosts only (a CLI listening on loopback for the redirect).
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


@extend_schema_serializer(component_name="Connection")
class ConnectionSerializer(serializers.ModelSerializer):
    class Meta:
        model = TerraConnection
        fields = ["id", "terra_user_id", "provider", "status", "connected_at", "last_webhook_at"]


def _upstream_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    descriptions = {
        502: "`upstream_unavailable`: Terra is unreachable, failed (5xx) or refused our request.",
        503: "`upstream_unavailable`: Terra is rate limiting us (with `Retry-After` when Terra gave one) "
        "or Terra is not configured on this server; `unavailable`: our database is not answering.",
        504: "`upstream_unavailable`: Terra did not answer in time.",
    }
    return {
        status: OpenApiResponse(response={"$ref": "#/components/schemas/Error"}, description=descriptions[status])
        for status in statuses
    }


def upstream_error_response(exc: TerraError, action: str) -> Response:
    """The envelope for a Terra failure (see the module docstring for the mapping)."""
    headers: dict[str, str] = {}
    if isinstance(exc, TerraNotConfigured):
        status, message = 503, f"Cannot {action}: Terra is not configured on this server."
    elif isinstance(exc, TerraUnavailable) and exc.timed_out:
        status, message = 504, f"Cannot {action}: Terra did not answer in time."
    elif isinstance(exc, TerraUnavailable) and exc.rate_limited:
        status, message = 503, f"Cannot {action}: Terra is rate limiting us; try again later."
        if exc.retry_after is not None:
            headers["Retry-After"] = str(int(exc.retry_after))
    elif isinstance(exc, TerraRejected):
        status, message = 502, f"Cannot {action}: Terra refused the request."
    else:
        status, message = 502, f"Cannot {action}: Terra is unavailable."
    # A refusal (TerraRejected) means our credentials or settings are wrong: worth an operator's look.
    logger.warning("cannot %s: %s (%s)", action, exc, type(exc).__name__)
    return Response(error_body(ErrorCode.UPSTREAM_UNAVAILABLE, message), status=status, headers=headers)


@extend_schema_serializer(component_name="MeUser")
class MeUserSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "email", "created_at"]


class MeApi(APIView):
    # A client may repeat its DELETE while the erasure runs (accounts.permissions.ActiveAccount).
    allow_during_erasure = ("DELETE",)

    @extend_schema_serializer(component_name="Me")
    class OutputSerializer(serializers.Serializer):
        user = MeUserSerializer()
        connections = ConnectionSerializer(many=True)
        connections_stale = serializers.BooleanField(
            help_text="True when a refresh from Terra was due and failed: the connections are what is stored."
        )

    @extend_schema(
        responses={200: OutputSerializer},
        summary="The caller and their Terra connections (refreshed from Terra at most every 5 minutes)",
        tags=["account"],
    )
    def get(self, request: Request) -> Response:
        user: User = request.user  # type: ignore[assignment]
        stale = connections_refresh_if_due(user=user)
        connections = TerraConnection.objects.filter(user=user).order_by("connected_at", "id")
        return Response(
            {
                "user": MeUserSerializer(user).data,
                "connections": ConnectionSerializer(connections, many=True).data,
                "connections_stale": stale,
            }
        )

    @extend_schema_serializer(component_name="Erasure")
    class ErasureSerializer(serializers.Serializer):
        id = serializers.CharField(help_text="The erased user's id.")
        status = serializers.ChoiceField(choices=["pending"])

    @extend_schema(
        responses={202: ErasureSerializer},
        summary="Erase the caller's account and data",
        description=(
            "Deauthorizes every connection at Terra, deletes typed rows, lab files and imports, "
            "redacts the ledger payloads of the caller's Terra users (rows kept without payload), "
            "then deletes the user — asynchronously. Idempotent while it runs. Tokens issued before "
            "the request are refused from then on (but for repeating this request); a later sign-in "
            "starts a new, empty account."
        ),
        tags=["account"],
    )
    def delete(self, request: Request) -> Response:
        user: User = request.user  # type: ignore[assignment]
        erasure = user_erasure_request(user=user, request_id=current_request_id.get())
        transaction.on_commit(partial(erasure_publish, erasure.user_id, current_request_id.get()), robust=True)
        return Response({"id": erasure.user_id, "status": "pending"}, status=202)


def _provider(value: Any) -> str | None:
    """Terra's provider name, in Terra's upper case whatever case the caller used (`oura`, `Oura`)."""
    if value is None:
        return None
    # ASCII only before upper-casing: "ß".upper() is "SS", and no provider name has such letters.
    if not isinstance(value, str) or not value.isascii() or not PROVIDER_PATTERN.fullmatch(value.upper()):
        raise invalid_field("provider", "provider must be 1-32 letters, digits or underscores (e.g. OURA).")
    return value.upper()


def _redirect_url(value: Any) -> str | None:
    if value is None:
        return None
    message = "redirect_url must be an https URL (http only for localhost)."
    if not isinstance(value, str) or len(value) > REDIRECT_URL_MAX_LENGTH or any(c.isspace() for c in value):
        raise invalid_field("redirect_url", message)
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise invalid_field("redirect_url", message) from exc
    if not hostname or not (parts.scheme == "https" or (parts.scheme == "http" and hostname in LOOPBACK_HOSTS)):
        raise invalid_field("redirect_url", message)
    return value


class ConnectApi(APIView):
    """`POST /v1/connect` (alias `/v1/sources/terra/connect`): a Terra Connect widget session."""

    # For the schema only: the body is validated by _provider and _redirect_url (invalid_field).
    @extend_schema_serializer(component_name="ConnectRequest")
    class InputSerializer(serializers.Serializer):
        provider = serializers.RegexField(
            r"^[A-Za-z0-9_]{1,32}$",
            required=False,
            allow_null=True,
            help_text="Terra's provider name in any case, e.g. OURA or oura.",
        )
        redirect_url = serializers.URLField(
            max_length=REDIRECT_URL_MAX_LENGTH,
            required=False,
            allow_null=True,
            help_text="Where the widget sends the browser afterwards: https, or http for localhost only.",
        )

    @extend_schema_serializer(component_name="ConnectSession")
    class OutputSerializer(serializers.Serializer):
        widget_url = serializers.URLField()
        session_id = serializers.CharField()
        expires_in = serializers.IntegerField(allow_null=True)

    @extend_schema(
        request=InputSerializer,
        responses={200: OutputSerializer, **_upstream_responses(502, 503, 504)},
        summary="Start connecting a wearable: a Terra Connect widget session for the caller",
        tags=["connections"],
    )
    def post(self, request: Request) -> Response:
        user: User = request.user  # type: ignore[assignment]
        body = request.data
        if not isinstance(body, dict):
            raise ApiError("The body must be a JSON object.", code=ErrorCode.INVALID_REQUEST)
        provider = _provider(body.get("provider"))
        redirect_url = _redirect_url(body.get("redirect_url"))
        try:
            session = connect_session(user=user, provider=provider, redirect_url=redirect_url)
        except TerraError as exc:
            return upstream_error_response(exc, "start a connection")
        return Response(session)


def _erase_flag(value: str | None) -> bool:
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise invalid_field("erase", "erase must be true or false.")


class ConnectionDeleteApi(APIView):
    """`DELETE /v1/connections/<id>[?erase=true]`: deauthorize (and erase) one of the caller's connections."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "erase",
                OpenApiTypes.STR,
                enum=["true", "false"],
                description="true also deletes the connection's data and redacts its ledger payloads.",
            )
        ],
        responses={200: ConnectionSerializer, **_upstream_responses(502, 503, 504)},
        summary="Disconnect a wearable: deauthorize at Terra, mark `deauthorized`, optionally erase its data",
        tags=["connections"],
    )
    def delete(self, request: Request, connection_id: int) -> Response:
        user: User = request.user  # type: ignore[assignment]
        erase = _erase_flag(request.query_params.get("erase"))
        try:
            connection = connection_disconnect(user=user, connection_id=connection_id, erase=erase)
        except TerraError as exc:
            return upstream_error_response(exc, "disconnect at Terra")
        if connection is None:
            raise NotFound("No such connection.", code="connection_not_found")
        return Response(ConnectionSerializer(connection).data)
