"""Terra's REST API (what we call), with explicit timeouts and typed errors.

Transient failures (timeouts, connection errors, 429, 5xx, an answer we cannot read) raise
TerraUnavailable and are worth a retry; any other 4xx raises TerraRejected and is not. Credentials
travel in headers and never appear in logs or error messages; messages name the method and path
only (query strings carry user ids).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date
from typing import Any

import httpx
from django.conf import settings

logger = logging.getLogger(__name__)

BACKFILL_TYPES = ("activity", "sleep", "daily", "body")


class TerraError(Exception):
    pass


class TerraNotConfigured(TerraError):
    """TERRA_DEV_ID / TERRA_API_KEY are not set: nothing can be asked of Terra."""


class TerraUnavailable(TerraError):
    """Terra did not answer usefully: timed out, unreachable, 429, 5xx or an unreadable answer.

    `status` is Terra's HTTP status when it answered (None for timeouts and transport errors);
    `timed_out` tells a timeout from the rest; `retry_after` is Terra's Retry-After in seconds.
    """

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        *,
        status: int | None = None,
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status
        self.timed_out = timed_out

    @property
    def rate_limited(self) -> bool:
        return self.status == 429


class TerraRejected(TerraError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


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
        self.close()

    def close(self) -> None:
        self._client.close()

    def _send(
        self, method: str, path: str, *, timeout: float | None = None, deadline: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One request; TerraUnavailable / TerraRejected for anything but a 2xx/3xx answer.

        `timeout` overrides the client's for this call (each of connect, write, read and pool).
        `deadline` bounds the whole exchange instead, from connecting to the answer's last byte: a
        Terra slow in every phase, each within a timeout, still ends there.
        """
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout)
        try:
            if deadline is None:
                response = self._client.request(method, path, **kwargs)
            else:
                response = asyncio.run(self._request_within(deadline, method, path, **kwargs))
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise TerraUnavailable(f"Terra {method} {path} timed out", timed_out=True) from exc
        except httpx.TransportError as exc:
            raise TerraUnavailable(f"Terra {method} {path} unreachable: {type(exc).__name__}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise TerraUnavailable(
                f"Terra {method} {path} answered {response.status_code}",
                retry_after=_retry_after(response),
                status=response.status_code,
            )
        if response.status_code >= 400:
            raise TerraRejected(f"Terra {method} {path} answered {response.status_code}", response.status_code)
        return response

    async def _request_within(self, deadline: float, method: str, path: str, **kwargs: Any) -> httpx.Response:
        # httpx's timeouts are per phase; only cancelling the whole exchange keeps one deadline.
        kwargs.setdefault("timeout", httpx.Timeout(deadline))
        async with (
            httpx.AsyncClient(base_url=self._client.base_url, headers=self._client.headers) as client,
            asyncio.timeout(deadline),
        ):
            return await client.request(method, path, **kwargs)

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A request whose JSON answer is returned as an object (a top-level list as {"data": list})."""
        response = self._send(method, path, **kwargs)
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

    def user_info(
        self, reference_id: str, *, timeout: float | None = None, deadline: float | None = None
    ) -> list[dict[str, Any]]:
        """The Terra users (one per connection) created under our `reference_id` (`GET /userInfo`).

        Terra answers a list for a reference id; `{"users": [...]}` is accepted too. Items that are
        not objects are dropped. Any other shape is TerraUnavailable: we cannot tell what Terra has.
        """
        body = self._request(
            "GET", "/userInfo", params={"reference_id": reference_id}, timeout=timeout, deadline=deadline
        )
        users = body.get("data", body.get("users"))
        if not isinstance(users, list):
            raise TerraUnavailable("Terra GET /userInfo answered an unexpected shape", status=200)
        return [user for user in users if isinstance(user, dict)]

    def generate_widget_session(
        self,
        reference_id: str,
        *,
        providers: list[str] | None = None,
        redirect_url: str | None = None,
        language: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """A Terra Connect widget session for `reference_id` → `{session_id, url, expires_in}`.

        `redirect_url` is used for both success and failure: the caller's page reads the outcome
        from Terra's query parameters.
        """
        params: dict[str, Any] = {"reference_id": reference_id}
        if providers:
            params["providers"] = ",".join(providers)
        if redirect_url:
            params["auth_success_redirect_url"] = redirect_url
            params["auth_failure_redirect_url"] = redirect_url
        if language:
            params["language"] = language
        body = self._request("POST", "/auth/generateWidgetSession", json=params, timeout=timeout)
        session_id, url, expires_in = body.get("session_id"), body.get("url"), body.get("expires_in")
        if not isinstance(session_id, str) or not isinstance(url, str) or not session_id or not url:
            raise TerraUnavailable("Terra POST /auth/generateWidgetSession answered without a session", status=200)
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            expires_in = None
        return {"session_id": session_id, "url": url, "expires_in": expires_in}

    def deauthenticate(self, terra_user_id: str, *, timeout: float | None = None) -> bool:
        """Deauthorize a Terra user (`DELETE /auth/deauthenticateUser`); Terra then sends `deauth`.

        Returns False when Terra does not know the user (404): it is gone already, which is what
        the caller wanted.
        """
        try:
            self._send("DELETE", "/auth/deauthenticateUser", params={"user_id": terra_user_id}, timeout=timeout)
        except TerraRejected as exc:
            if exc.status == 404:
                logger.info("Terra did not know the user to deauthenticate: treated as already gone")
                return False
            raise
        return True

    def subscriptions(self, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """Every Terra user subscribed to our developer id (`GET /subscriptions`), all pages."""
        users: list[dict[str, Any]] = []
        page = 0
        while True:
            body = self._request("GET", "/subscriptions", params={"page": page, "per_page": 500}, timeout=timeout)
            data = body.get("data")
            results = data.get("results") if isinstance(data, dict) else body.get("users")
            if not isinstance(results, list):
                raise TerraUnavailable("Terra GET /subscriptions answered an unexpected shape", status=200)
            users.extend(user for user in results if isinstance(user, dict))
            max_page = data.get("max_page") if isinstance(data, dict) else None
            if not isinstance(max_page, int) or page >= max_page or not results:
                return users
            page += 1

    def submit_lab_report(
        self, *, reference_id: str, filename: str, content: bytes, content_type: str, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send a lab report file for parsing (`POST /lab-reports`, multipart `file`) → `{upload_id, ...}`.

        The parsed biomarkers arrive later through the webhook as a lab report.
        """
        body = self._request(
            "POST",
            "/lab-reports",
            params={"reference_id": reference_id},
            files={"file": (filename, content, content_type)},
            timeout=timeout,
        )
        upload_id = body.get("upload_id")
        if not isinstance(upload_id, str | int) or isinstance(upload_id, bool) or not str(upload_id):
            raise TerraUnavailable("Terra POST /lab-reports answered without an upload_id", status=200)
        return {**body, "upload_id": str(upload_id)}
