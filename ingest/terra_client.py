"""Terra's REST API (what we call), with explicit timeouts and typed errors.

Transient failures (timeouts, connection errors, 429, 5xx) raise TerraUnavailable and are worth a
retry; any other 4xx raises TerraRejected and is not. Credentials travel in headers and never
appear in logs or error messages.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import httpx
from django.conf import settings

logger = logging.getLogger(__name__)

BACKFILL_TYPES = ("activity", "sleep", "daily", "body")


class TerraError(Exception):
    pass


class TerraUnavailable(TerraError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TerraRejected(TerraError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class TerraClient:
    def __init__(
        self,
        *,
        base_url: str | None = None,
        dev_id: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self._client = httpx.Client(
            base_url=base_url or settings.TERRA_API_BASE_URL,
            headers={"dev-id": dev_id or settings.TERRA_DEV_ID, "x-api-key": api_key or settings.TERRA_API_KEY},
            timeout=timeout or settings.TERRA_API_TIMEOUT_SECONDS,
        )

    def __enter__(self) -> TerraClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._client.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise TerraUnavailable(f"Terra {method} {path} timed out") from exc
        except httpx.TransportError as exc:
            raise TerraUnavailable(f"Terra {method} {path} unreachable: {type(exc).__name__}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = response.headers.get("retry-after", "")
            raise TerraUnavailable(
                f"Terra {method} {path} answered {response.status_code}",
                retry_after=float(retry_after) if retry_after.isdigit() else None,
            )
        if response.status_code >= 400:
            raise TerraRejected(f"Terra {method} {path} answered {response.status_code}", response.status_code)
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {"data": body}

    def request_backfill(self, *, data_type: str, terra_user_id: str, start: date, end: date) -> dict[str, Any]:
        """Ask Terra to send `data_type` for the dates to our webhook (`to_webhook=true`)."""
        return self._request(
            "GET",
            f"/{data_type}",
            params={
                "user_id": terra_user_id,
                "start_date": start.isoformat(),
                "end_date": end.isoformat(),
                "to_webhook": "true",
            },
        )
