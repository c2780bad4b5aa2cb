"""CLI login by device flow (after RFC 8628): start, approve in the browser, exchange.

The device code (32 random bytes) is what the CLI polls with; the user code (8 letters) is what the
person checks in the browser. Only their SHA-256 digests are stored. Every state change is one
conditional UPDATE, so two requests racing on one login cannot both win: one approval, one token.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import DeviceLogin, User
from accounts.tokens import IssuedToken, cli_token_issue
from amy.errors import ApiError

EXPIRES_IN_SECONDS = 600
# Read at call time, so tests can monkeypatch it.
POLL_INTERVAL_SECONDS = 5

# RFC 8628 §6.1's base-20 alphabet: consonants only (no words, no 0/O or 1/I confusion).
# 20^8 ≈ 2.6e10 codes, live for 10 minutes, behind a rate limit.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
_USER_CODE_SEPARATORS = re.compile(r"[\s-]+")
_CREATE_ATTEMPTS = 5


class DeviceLoginError(ApiError):
    status = 400


AUTHORIZATION_PENDING = "authorization_pending"
SLOW_DOWN = "slow_down"
EXPIRED_TOKEN = "expired_token"  # noqa: S105 - an error code, not a secret
INVALID_GRANT = "invalid_grant"
CONFIRMATION_REQUIRED = "confirmation_required"

CLIENT_FIELD_LENGTH = 64
# What a client may call itself: printable ASCII, no markup-looking characters to dress up with.
_CLIENT_TEXT = re.compile(r"[^A-Za-z0-9 ._+()/:;,@-]")


@dataclass(frozen=True)
class DeviceClient:
    """Who asked for a login: the address (through the trusted proxies) and what the client says
    it is. Shown to the person who approves, so a login they did not start can be told apart."""

    ip: str = ""
    name: str = ""
    version: str = ""


def client_text(value: str) -> str:
    """A client-given name or version as it may be stored and shown: stripped of anything but
    plain printable characters, at most CLIENT_FIELD_LENGTH long."""
    return _CLIENT_TEXT.sub("", value).strip()[:CLIENT_FIELD_LENGTH]


def client_from_user_agent(user_agent: str) -> tuple[str, str]:
    """(name, version) from a User-Agent's first product, `amy-cli/0.4.1 (darwin)` → ("amy-cli",
    "0.4.1"); ("", "") when there is none."""
    product = user_agent.strip().split(" ", 1)[0] if user_agent.strip() else ""
    name, _, version = product.partition("/")
    return client_text(name), client_text(version)


@dataclass(frozen=True)
class DeviceLoginStarted:
    device_code: str
    user_code: str
    expires_in: int
    interval: int


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def user_code_normalize(user_code: str) -> str | None:
    """The user code in its canonical form (8 capital letters, no dash), or None if it cannot be one.

    People retype codes: case, a missing dash or spaces do not matter.
    """
    code = _USER_CODE_SEPARATORS.sub("", user_code).upper()
    if len(code) != USER_CODE_LENGTH or any(letter not in USER_CODE_ALPHABET for letter in code):
        return None
    return code


def user_code_format(code: str) -> str:
    """ABCDEFGH → ABCD-EFGH."""
    half = USER_CODE_LENGTH // 2
    return f"{code[:half]}-{code[half:]}"


def device_login_start(client: DeviceClient | None = None) -> DeviceLoginStarted:
    client = client or DeviceClient()
    now = timezone.now()
    device_code = secrets.token_urlsafe(32)
    for attempt in range(_CREATE_ATTEMPTS):
        user_code = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))
        try:
            # A savepoint, so a user-code collision (unique across all stored logins) can be retried.
            with transaction.atomic():
                DeviceLogin.objects.create(
                    device_code_hash=_digest(device_code),
                    user_code_hash=_digest(user_code),
                    created_at=now,
                    expires_at=now + timedelta(seconds=EXPIRES_IN_SECONDS),
                    requested_ip=client.ip[:CLIENT_FIELD_LENGTH],
                    client_name=client_text(client.name),
                    client_version=client_text(client.version),
                )
            break
        except IntegrityError:
            if attempt == _CREATE_ATTEMPTS - 1:
                raise
    return DeviceLoginStarted(
        device_code=device_code,
        user_code=user_code_format(user_code),
        expires_in=EXPIRES_IN_SECONDS,
        interval=POLL_INTERVAL_SECONDS,
    )


def device_login_pending(*, user_code: str) -> DeviceLogin | None:
    """The login this user code would approve (live, not exchanged), for the approval page."""
    code = user_code_normalize(user_code)
    if code is None:
        return None
    return DeviceLogin.objects.filter(
        user_code_hash=_digest(code), expires_at__gt=timezone.now(), consumed_at__isnull=True
    ).first()


def device_login_approve(*, user_code: str, user: User, confirmed: bool) -> None:
    """Approve the pending login with this user code for `user`; idempotent for the same user.

    `confirmed`: the person confirmed that the code is the one their terminal shows (a link
    carrying someone else's code is how device logins are phished); without it →
    `confirmation_required`, and nothing changes. Unknown, expired, already exchanged, or approved
    by someone else → `invalid_grant`.
    """
    code = user_code_normalize(user_code)
    if code is None:
        raise DeviceLoginError("Unknown or expired code.", code=INVALID_GRANT)
    if not confirmed:
        raise DeviceLoginError(
            "Confirm that this code is the one your terminal shows.",
            code=CONFIRMATION_REQUIRED,
            details={"field": "confirmed"},
        )
    now = timezone.now()
    live = DeviceLogin.objects.filter(user_code_hash=_digest(code), expires_at__gt=now, consumed_at__isnull=True)
    if live.filter(approved_at__isnull=True).update(approved_by=user, approved_at=now) == 1:
        return
    # Not approved just now: fine if this user already did (a reloaded page), refused otherwise.
    if not live.filter(approved_by=user).exists():
        raise DeviceLoginError("Unknown or expired code.", code=INVALID_GRANT)


def device_login_exchange(*, device_code: str) -> IssuedToken:
    """The CLI token for an approved login, exactly once; otherwise a DeviceLoginError whose code
    tells the CLI what to do (keep polling, poll slower, start over)."""
    now = timezone.now()
    login = DeviceLogin.objects.filter(device_code_hash=_digest(device_code)).first()
    if login is None or login.consumed_at is not None:
        raise DeviceLoginError("Unknown or already used device code.", code=INVALID_GRANT)
    if login.expires_at <= now:
        raise DeviceLoginError("The login expired; start again.", code=EXPIRED_TOKEN)
    if login.approved_by_id is not None:
        with transaction.atomic():
            # The claim: of two exchanges racing here, PostgreSQL lets the second UPDATE see the
            # first one's committed consumed_at, so it matches no row.
            claimed = DeviceLogin.objects.filter(pk=login.pk, consumed_at__isnull=True).update(consumed_at=now)
            if claimed != 1:
                raise DeviceLoginError("Unknown or already used device code.", code=INVALID_GRANT)
            # Minted in the claim's transaction: if minting fails, the login is not spent.
            return cli_token_issue(
                user=User.objects.get(pk=login.approved_by_id),
                client_name=login.client_name,
                client_version=login.client_version,
            )
    # Pending. A poll counts only if the previous counted poll is at least `interval` old; a
    # too-early poll is answered slow_down and does not move the clock.
    interval = timedelta(seconds=POLL_INTERVAL_SECONDS)
    on_time = Q(last_polled_at__isnull=True) | Q(last_polled_at__lte=now - interval)
    if DeviceLogin.objects.filter(on_time, pk=login.pk).update(last_polled_at=now) == 0:
        raise DeviceLoginError(f"Polling too fast: wait {POLL_INTERVAL_SECONDS} s between polls.", code=SLOW_DOWN)
    raise DeviceLoginError("Waiting for approval in the browser.", code=AUTHORIZATION_PENDING)


def device_login_purge_expired(*, expired_before: datetime) -> int:
    """Delete logins that expired before this time; returns how many. For a periodic task: rows
    past expiry only answer `expired_token`, and the user-code hashes stay unique while kept."""
    deleted, _ = DeviceLogin.objects.filter(expires_at__lt=expired_before).delete()
    return deleted
