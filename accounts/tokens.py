"""Amy CLI tokens: HS256 with AMY_JWT_SECRET, claims {sub, iat, exp, v: 1, jti}.

Tokens we mint carry a `jti` recorded in `cli_tokens`, so they can be revoked; tokens without
one (as the source minted them) stay valid until they expire.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from accounts.models import CliToken, User

ALGORITHM = "HS256"
# How fresh a token's `last_used_at` is kept.
LAST_USED_PRECISION = timedelta(minutes=1)


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime
    user_id: str


def cli_token_issue(*, user: User, client_name: str = "", client_version: str = "") -> IssuedToken:
    now = timezone.now()
    expires_at = now + timedelta(days=settings.AMY_CLI_TOKEN_DAYS)
    jti = secrets.token_urlsafe(16)
    CliToken.objects.create(
        jti=jti,
        user=user,
        issued_at=now,
        expires_at=expires_at,
        client_name=client_name,
        client_version=client_version,
    )
    claims = {"sub": user.pk, "iat": int(now.timestamp()), "exp": int(expires_at.timestamp()), "v": 1, "jti": jti}
    token = jwt.encode(claims, settings.AMY_JWT_SECRET, algorithm=ALGORITHM, headers={"typ": "JWT"})
    return IssuedToken(token=token, expires_at=expires_at, user_id=user.pk)


def cli_token_verify(token: str) -> dict[str, object]:
    """The claims of a valid, unrevoked CLI token; InvalidToken otherwise."""
    try:
        claims = jwt.decode(
            token,
            settings.AMY_JWT_SECRET,
            algorithms=[ALGORITHM],  # pinned: never taken from the token
            options={"require": ["sub", "iat", "exp"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    if claims.get("v") != 1 or not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise InvalidToken("not an Amy CLI token")
    jti = claims.get("jti")
    if jti is not None:
        record = CliToken.objects.filter(jti=jti, revoked_at__isnull=True).values_list("last_used_at").first()
        if record is None:
            raise InvalidToken("token revoked")
        _note_use(str(jti), record[0])
    return claims


def _note_use(jti: str, last_used_at: datetime | None) -> None:
    """Record the use when the stored one is older than LAST_USED_PRECISION: a write a minute at
    most per token, and none from two requests in the same minute (the UPDATE re-checks)."""
    now = timezone.now()
    stale_before = now - LAST_USED_PRECISION
    if last_used_at is not None and last_used_at > stale_before:
        return
    CliToken.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale_before), jti=jti).update(
        last_used_at=now
    )


def cli_token_revoke(*, jti: str) -> None:
    CliToken.objects.filter(jti=jti, revoked_at__isnull=True).update(revoked_at=timezone.now())


def cli_tokens_of(*, user: User) -> list[CliToken]:
    """The user's CLI tokens still usable (neither revoked nor expired), newest first."""
    return list(
        CliToken.objects.filter(user=user, revoked_at__isnull=True, expires_at__gt=timezone.now()).order_by(
            "-issued_at", "jti"
        )
    )


def cli_token_revoke_of(*, user: User, jti: str) -> bool:
    """Revoke one of the user's usable tokens; False when the user has no such token (another
    user's is as unknown as a made-up one)."""
    revoked = CliToken.objects.filter(
        jti=jti, user=user, revoked_at__isnull=True, expires_at__gt=timezone.now()
    ).update(revoked_at=timezone.now())
    return revoked == 1
