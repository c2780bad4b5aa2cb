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
from django.utils import timezone

from accounts.models import CliToken, User

ALGORITHM = "HS256"


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime
    user_id: str


def cli_token_issue(*, user: User) -> IssuedToken:
    now = timezone.now()
    expires_at = now + timedelta(days=settings.AMY_CLI_TOKEN_DAYS)
    jti = secrets.token_urlsafe(16)
    CliToken.objects.create(jti=jti, user=user, issued_at=now, expires_at=expires_at)
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
    if jti is not None and not CliToken.objects.filter(jti=jti, revoked_at__isnull=True).exists():
        raise InvalidToken("token revoked")
    return claims


def cli_token_revoke(*, jti: str) -> None:
    CliToken.objects.filter(jti=jti, revoked_at__isnull=True).update(revoked_at=timezone.now())
