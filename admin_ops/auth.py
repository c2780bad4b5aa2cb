"""The ops key: `x-admin-key` equal to AMY_ADMIN_KEY (read and write) or to the optional
AMY_ADMIN_READ_KEY (GET only), compared in constant time; never read from the query string. Each
setting may list several keys, comma-separated, so a key is rotated without downtime
(docs/deployment.md).

Use `AdminApiView` as the base of every `/admin/*` JSON endpoint: it authenticates the key,
refuses writes to the read key (403 `forbidden`), and limits failed attempts per client IP.

The key is checked before the limit, and only a wrong key counts or is refused: anyone can send
wrong keys, and a limit that refused the right one too would let them lock out every operator and
every Prometheus scrape. The client IP is taken through the trusted proxies (amy/client_ip.py):
behind a proxy, REMOTE_ADDR is the proxy, the same for every caller.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated, PermissionDenied, Throttled
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.views import APIView

from amy.client_ip import client_ip

if TYPE_CHECKING:
    from rest_framework.request import Request

logger = logging.getLogger(__name__)

ADMIN_KEY_HEADER = "x-admin-key"
ACTOR_HEADER = "x-admin-actor"
_FAILURE_WINDOW_SECONDS = 60


@dataclass(frozen=True)
class AdminPrincipal:
    """Who is calling an ops endpoint: the key's access level and the actor it names."""

    can_write: bool
    actor: str
    is_authenticated: bool = True
    pk: str = "admin"


def _matches(given: str, expected: str) -> bool:
    """`given` equals one of the comma-separated keys in `expected` (several at once while a key is
    rotated, as TERRA_WEBHOOK_SECRET). Hash both sides first so that neither the length nor the
    content leaks through timing; every key is compared, so neither does which one matched."""
    keys = [key.strip() for key in expected.split(",") if key.strip()]
    matched = [
        hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(key.encode()).digest())
        for key in keys
    ]
    return any(matched)


def _failure_key(request: Request) -> str:
    return f"admin-key-failures:{client_ip(request) or 'unknown'}"


def _too_many_failures(request: Request) -> bool:
    try:
        return int(cache.get(_failure_key(request)) or 0) >= settings.AMY_ADMIN_FAILURES_PER_MINUTE
    except RedisError:
        return False


def _count_failure(request: Request) -> None:
    try:
        if not cache.add(_failure_key(request), 1, _FAILURE_WINDOW_SECONDS):
            cache.incr(_failure_key(request))
    except (RedisError, ValueError):
        logger.warning("admin key failure not counted: cache unavailable")


class AdminKeyAuthentication(BaseAuthentication):
    def given_key(self, request: Request) -> str | None:
        return request.headers.get(ADMIN_KEY_HEADER)

    def authenticate(self, request: Request) -> tuple[AdminPrincipal, None]:
        given = self.given_key(request)
        if not given:
            raise NotAuthenticated("The x-admin-key header is missing.")
        actor = (request.headers.get(ACTOR_HEADER) or "admin-key")[:255]
        if _matches(given, settings.AMY_ADMIN_KEY):
            return AdminPrincipal(can_write=True, actor=actor), None
        if _matches(given, settings.AMY_ADMIN_READ_KEY):
            return AdminPrincipal(can_write=False, actor=actor), None
        if _too_many_failures(request):
            raise Throttled(wait=_FAILURE_WINDOW_SECONDS)
        _count_failure(request)
        raise AuthenticationFailed("The admin key is not valid.")

    def authenticate_header(self, request: Request) -> str:
        return ADMIN_KEY_HEADER


class AdminKeyPermission(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.user
        if not isinstance(principal, AdminPrincipal):
            return False
        if request.method not in SAFE_METHODS and not principal.can_write:
            raise PermissionDenied("The read-only key cannot change anything.")
        return True


class AdminApiView(APIView):
    authentication_classes = [AdminKeyAuthentication]
    permission_classes = [AdminKeyPermission]
    throttle_classes: list[type] = []

    def actor(self) -> str:
        principal: AdminPrincipal = self.request.user  # type: ignore[assignment]
        return principal.actor
