"""The client's address, as far as this deployment can trust it.

Behind `AMY_NUM_PROXIES` reverse proxies (DRF's `NUM_PROXIES`), the client is the address the
outermost trusted proxy appended to X-Forwarded-For; unset, it is REMOTE_ADDR, and a client-sent
X-Forwarded-For is never believed (a caller could name any address and never be limited). The
same rule as DRF's throttles, for limits that are not DRF throttles (the ops key, the console
sign-in lockout).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from rest_framework.settings import api_settings


def client_ip(request: Any) -> str | None:
    """The caller's address (a Django or DRF request); None when there is no valid one."""
    address = request.META.get("REMOTE_ADDR") or ""
    num_proxies = api_settings.NUM_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if num_proxies and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",")]
        address = hops[-min(num_proxies, len(hops))]
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None
