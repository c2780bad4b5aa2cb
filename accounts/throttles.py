"""Rate limits, backed by the Django cache (Redis). A limit protects, it does not decide:
when Redis is down, requests pass (with a warning) rather than fail."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.conf import settings
from redis.exceptions import RedisError
from rest_framework.throttling import SimpleRateThrottle, UserRateThrottle

from amy.client_ip import client_ip

if TYPE_CHECKING:  # DRF's views import the throttle classes from settings: no cycle at run time
    from rest_framework.request import Request
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)


class FailOpenMixin:
    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            return bool(super().allow_request(request, view))  # type: ignore[misc]
        except RedisError as exc:
            logger.warning("rate limit skipped, cache unavailable: %s", type(exc).__name__)
            return True


class ApiUserRateThrottle(FailOpenMixin, UserRateThrottle):
    """Per user, AMY_USER_RATE_PER_MINUTE (600) requests a minute on /v1/*."""

    def get_rate(self) -> str:
        return f"{settings.AMY_USER_RATE_PER_MINUTE}/min"


class AuthRateThrottle(FailOpenMixin, SimpleRateThrottle):
    """Per client IP, AMY_AUTH_RATE_PER_MINUTE (30) requests a minute on one endpoint.

    The rate is read per request rather than fixed at import, so a settings change applies.
    """

    def get_rate(self) -> str:
        return f"{settings.AMY_AUTH_RATE_PER_MINUTE}/min"

    def get_ident(self, request: Request) -> str:
        # Not DRF's own: without NUM_PROXIES it keys on X-Forwarded-For as the client sent it, and
        # a client that varies it would never be limited.
        return client_ip(request) or "unknown"

    def get_cache_key(self, request: Request, view: APIView) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class DeviceStartRateThrottle(AuthRateThrottle):
    scope = "auth_device"


class DeviceTokenRateThrottle(AuthRateThrottle):
    scope = "auth_token"
