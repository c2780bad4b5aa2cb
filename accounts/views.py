"""CLI login by device flow and logout: thin views over accounts.device_login."""

from __future__ import annotations

import base64
import binascii
import logging
import re
from typing import Any, cast
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from accounts.authentication import TokenInfo
from accounts.device_login import (
    CLIENT_FIELD_LENGTH,
    DeviceClient,
    client_from_user_agent,
    device_login_approve,
    device_login_exchange,
    device_login_pending,
    device_login_start,
    user_code_format,
    user_code_normalize,
)
from accounts.permissions import ActiveAccount
from accounts.throttles import DeviceStartRateThrottle, DeviceTokenRateThrottle
from accounts.tokens import cli_token_revoke, cli_token_revoke_of, cli_tokens_of
from amy.client_ip import client_ip
from amy.errors import ApiError, ErrorCode, NotFound

logger = logging.getLogger(__name__)

TOKEN_NOT_FOUND = "token_not_found"  # noqa: S105 - an error code, not a secret
# A jti as accounts/tokens.py mints them (URL-safe base64); anything else is no token of ours.
_TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

CLERK_JS_MAJOR_VERSION = 5  # v5 still bundles the sign-in UI in clerk.browser.js
_PUBLISHABLE_KEY = re.compile(r"pk_(?:test|live)_([A-Za-z0-9+/=]+)")
_FRONTEND_API_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?")


# --- rate limits ------------------------------------------------------------------------------------


# --- helpers ----------------------------------------------------------------------------------------


def _validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    """The serializer's validated data, or the envelope's invalid_field naming the first bad field."""
    serializer = serializer_class(data=data)
    if serializer.is_valid():
        return dict(serializer.validated_data)
    field, messages = next(iter(serializer.errors.items()))
    if field == api_settings.NON_FIELD_ERRORS_KEY:
        raise ApiError("The body must be a JSON object.", code=ErrorCode.INVALID_REQUEST)
    raise ApiError(f"{field}: {messages[0]}", code=ErrorCode.INVALID_FIELD, details={"field": field})


class NoStoreMixin:
    """Codes and tokens must not sit in caches (RFC 6749 §5.1): every answer, errors included."""

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        response["Cache-Control"] = "no-store"
        return response


class IsClerkSession(BasePermission):
    message = "Approve from the browser sign-in; a CLI token cannot approve a CLI login."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return getattr(request.auth, "kind", None) == "clerk"


# --- APIs -------------------------------------------------------------------------------------------


class DeviceLoginStartApi(NoStoreMixin, APIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [DeviceStartRateThrottle]

    @extend_schema_serializer(component_name="DeviceLoginStart")
    class InputSerializer(serializers.Serializer):
        client_name = serializers.CharField(required=False, allow_blank=True, max_length=CLIENT_FIELD_LENGTH)
        client_version = serializers.CharField(required=False, allow_blank=True, max_length=CLIENT_FIELD_LENGTH)

    @extend_schema_serializer(component_name="DeviceLoginStarted")
    class OutputSerializer(serializers.Serializer):
        device_code = serializers.CharField()
        user_code = serializers.CharField()
        verification_url = serializers.URLField()
        expires_in = serializers.IntegerField()
        interval = serializers.IntegerField()

    @extend_schema(
        request=InputSerializer,
        responses={200: OutputSerializer},
        summary="Start a CLI login (device flow): the CLI shows verification_url and polls /v1/auth/token",
        description=(
            "The body is optional. `client_name` and `client_version` (else the User-Agent's first product, "
            "`name/version`) are shown on the approval page with the time and the caller's address."
        ),
        tags=["auth"],
    )
    def post(self, request: Request) -> Response:
        data = _validated(self.InputSerializer, request.data or {})
        agent_name, agent_version = client_from_user_agent(request.headers.get("User-Agent", ""))
        named = "client_name" in data or "client_version" in data
        started = device_login_start(
            DeviceClient(
                ip=client_ip(request) or "",
                name=data.get("client_name", "") if named else agent_name,
                version=data.get("client_version", "") if named else agent_version,
            )
        )
        query = urlencode({"code": started.user_code})
        output = self.OutputSerializer(
            {
                "device_code": started.device_code,
                "user_code": started.user_code,
                "verification_url": f"{request.build_absolute_uri(reverse('cli-login'))}?{query}",
                "expires_in": started.expires_in,
                "interval": started.interval,
            }
        )
        return Response(output.data)


class DeviceLoginApproveApi(APIView):
    permission_classes = [ActiveAccount, IsClerkSession]

    @extend_schema_serializer(component_name="DeviceLoginApproval")
    class InputSerializer(serializers.Serializer):
        user_code = serializers.CharField(max_length=64)
        # The person ticked "this is the code my terminal shows"; required to be true.
        confirmed = serializers.BooleanField(required=False, default=False)

    @extend_schema_serializer(component_name="DeviceLoginApproved")
    class OutputSerializer(serializers.Serializer):
        ok = serializers.BooleanField()

    @extend_schema(
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            403: OpenApiResponse(
                response={"$ref": "#/components/schemas/Error"},
                description="`forbidden`: approve with a Clerk session token, not a CLI token.",
            ),
        },
        summary="Approve a CLI login by its user code (Clerk session token only); unknown or expired: invalid_grant",
        description=(
            "`confirmed` must be true: the person confirmed the code is the one their terminal shows "
            "(else 400 `confirmation_required`, nothing approved)."
        ),
        tags=["auth"],
    )
    def post(self, request: Request) -> Response:
        data = _validated(self.InputSerializer, request.data)
        device_login_approve(
            user_code=data["user_code"],
            user=request.user,  # type: ignore[arg-type]
            confirmed=data["confirmed"],
        )
        return Response(self.OutputSerializer({"ok": True}).data)


class DeviceLoginTokenApi(NoStoreMixin, APIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [DeviceTokenRateThrottle]

    @extend_schema_serializer(component_name="DeviceLoginTokenRequest")
    class InputSerializer(serializers.Serializer):
        device_code = serializers.CharField(max_length=128)

    @extend_schema_serializer(component_name="DeviceLoginToken")
    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()
        token_type = serializers.CharField()
        expires_at = serializers.DateTimeField()
        user_id = serializers.CharField()

    @extend_schema(
        request=InputSerializer,
        responses={200: OutputSerializer},
        summary="Exchange an approved device code for a CLI token, once",
        description=(
            "400 codes: `authorization_pending` (keep polling), `slow_down` (polled faster than `interval`), "
            "`expired_token` (start again), `invalid_grant` (unknown or already used), `invalid_field`."
        ),
        tags=["auth"],
    )
    def post(self, request: Request) -> Response:
        data = _validated(self.InputSerializer, request.data)
        issued = device_login_exchange(device_code=data["device_code"])
        output = self.OutputSerializer(
            {"token": issued.token, "token_type": "Bearer", "expires_at": issued.expires_at, "user_id": issued.user_id}
        )
        return Response(output.data)


class LogoutApi(APIView):
    @extend_schema(request=None, responses={204: None}, summary="Revoke the presented CLI token", tags=["auth"])
    def post(self, request: Request) -> Response:
        token = cast(TokenInfo, request.auth)
        jti = token.claims.get("jti") if token.kind == "cli" else None
        if isinstance(jti, str):
            cli_token_revoke(jti=jti)
        # Also 204, revoking nothing:
        # - a CLI token without a jti (the source minted them so): there is no record to revoke, and
        #   such tokens stay valid until they expire, as they always have;
        # - a Clerk session token: the session is Clerk's, ended by signing out in the browser.
        # Logging out is then as done as we can make it, and a client's logout never fails on it.
        return Response(status=204)


@extend_schema_serializer(component_name="CliToken")
class CliTokenSerializer(serializers.Serializer):
    id = serializers.CharField(source="jti")
    created_at = serializers.DateTimeField(source="issued_at")
    expires_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    client_name = serializers.CharField()
    client_version = serializers.CharField()
    current = serializers.BooleanField()


@extend_schema_serializer(component_name="CliTokenList")
class CliTokenListSerializer(serializers.Serializer):
    data = CliTokenSerializer(many=True)  # type: ignore[assignment]  # a declared field, not Serializer.data


class CliTokenListApi(APIView):
    @extend_schema(
        responses={200: CliTokenListSerializer},
        summary="The caller's usable CLI tokens (never the tokens themselves), newest first",
        description="`last_used_at` is kept to the minute. `current` marks the token making this request.",
        tags=["auth"],
    )
    def get(self, request: Request) -> Response:
        auth = cast(TokenInfo, request.auth)
        jti = auth.claims.get("jti") if auth.kind == "cli" else None
        tokens = cli_tokens_of(user=request.user)  # type: ignore[arg-type]
        for token in tokens:
            token.current = token.jti == jti  # type: ignore[attr-defined]
        return Response(CliTokenListSerializer({"data": tokens}).data)


class CliTokenApi(APIView):
    @extend_schema(
        responses={
            204: None,
            404: OpenApiResponse(
                response={"$ref": "#/components/schemas/Error"},
                description="`token_not_found`: unknown, expired, revoked already, or another user's.",
            ),
        },
        summary="Revoke one of the caller's CLI tokens: it is refused from then on",
        tags=["auth"],
    )
    def delete(self, request: Request, token_id: str) -> Response:
        if not _TOKEN_ID.fullmatch(token_id) or not cli_token_revoke_of(user=request.user, jti=token_id):  # type: ignore[arg-type]
            raise NotFound("No such token.", code=TOKEN_NOT_FOUND)
        return Response(status=204)


# --- the browser page -------------------------------------------------------------------------------


def clerk_js_url(publishable_key: str) -> str | None:
    """ClerkJS from the instance's own Frontend API, whose host the publishable key encodes
    (`pk_test_` or `pk_live_` + base64 of `<host>$`); None when the key is missing or malformed."""
    match = _PUBLISHABLE_KEY.fullmatch(publishable_key)
    if match is None:
        return None
    encoded = match.group(1)
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return None
    host = decoded.removesuffix("$")
    if not _FRONTEND_API_HOST.fullmatch(host):
        return None
    return f"https://{host}/npm/@clerk/clerk-js@{CLERK_JS_MAJOR_VERSION}/dist/clerk.browser.js"


@require_GET
@never_cache
def cli_login_page(request: HttpRequest) -> HttpResponse:
    """Step 2: sign in with Clerk in the browser, then approve the code the terminal shows."""
    raw_code = request.GET.get("code", "").strip()[:64]
    normalized = user_code_normalize(raw_code)
    user_code = user_code_format(normalized) if normalized else raw_code
    login = device_login_pending(user_code=raw_code) if raw_code else None
    context = {
        "user_code": user_code,
        "login": login,
        "publishable_key": settings.CLERK_PUBLISHABLE_KEY,
        "clerk_js_url": clerk_js_url(settings.CLERK_PUBLISHABLE_KEY),
        "page_config": {"userCode": user_code, "approveUrl": reverse("device-login-approve"), "pending": bool(login)},
    }
    return render(request, "accounts/cli_login.html", context)
