"""`Authorization: Bearer <token>` for the API: Amy CLI tokens (HS256) and Clerk session tokens
(RS256). The verifier is chosen by the token header's `alg` before anything is verified, and each
path pins its own algorithm and key type."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

import jwt
from django.db.models import OuterRef, Subquery
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from accounts.clerk import clerk_email_remember, clerk_token_verify
from accounts.models import User, UserErasure
from accounts.tokens import InvalidToken, cli_token_verify

_MAX_TOKEN_LENGTH = 8192


@dataclass(frozen=True)
class TokenInfo:
    """`request.auth` of an authenticated request: which kind of token, and its claims."""

    kind: Literal["cli", "clerk"]
    claims: dict[str, Any]
    # The token was issued before its user asked for the account's erasure, which is still
    # running: it may repeat the DELETE /v1/me, nothing else (accounts.permissions).
    erasure_pending: bool = False


class AccountErased(InvalidToken):
    """The token was issued before its account was erased."""


def _issued_at(claims: dict[str, Any]) -> datetime | None:
    # Clerk requires nbf, not iat; a token with neither counts as issued before anything.
    value = claims.get("iat", claims.get("nbf"))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return datetime.fromtimestamp(value, tz=UTC)


def _issued_before(claims: dict[str, Any], moment: datetime) -> bool:
    issued_at = _issued_at(claims)
    # iat has whole seconds: a token of the erasure's own second is refused too.
    return issued_at is None or issued_at <= moment.replace(microsecond=0)


def user_for_token(token: str) -> tuple[User, TokenInfo]:
    """The user a bearer token names (created on first sight: a lazy upsert) and its claims."""
    if len(token) > _MAX_TOKEN_LENGTH:
        raise InvalidToken("token too long")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidToken("not a JWT") from exc
    algorithm = header.get("alg")
    if algorithm == "HS256":
        info = TokenInfo("cli", cli_token_verify(token))
    elif algorithm == "RS256":
        info = TokenInfo("clerk", clerk_token_verify(token, header.get("kid")))
    else:
        raise InvalidToken("unsupported algorithm")
    subject = info.claims["sub"]
    # The erasure record comes with the user row, in one query: it outlives the row, and a token
    # issued before it stays refused once a later sign-in has made a new account.
    last_erasure = UserErasure.objects.filter(pk=OuterRef("pk")).values("requested_at")[:1]
    found = User.objects.filter(pk=subject).annotate(erased_at=Subquery(last_erasure)).first()
    user: User | None = found
    first_sight = False
    if user is None:
        # A first sign-in, or one after an erasure.
        erased_at = UserErasure.objects.filter(pk=subject).values_list("requested_at", flat=True).first()
        if erased_at is not None and _issued_before(info.claims, erased_at):
            raise AccountErased("the account was erased")
        user, first_sight = User.objects.get_or_create(id=subject)
    elif user.erasure_requested_at is not None and _issued_before(info.claims, user.erasure_requested_at):
        info = replace(info, erasure_pending=True)
    elif found is not None and found.erased_at is not None and _issued_before(info.claims, found.erased_at):
        raise AccountErased("the account was erased")
    if info.kind == "clerk" and not info.erasure_pending:
        clerk_email_remember(user, info.claims, first_sight=first_sight)
    return user, info


class BearerTokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[User, TokenInfo] | None:
        header = get_authorization_header(request).split()
        if not header:
            return None  # no credentials: IsAuthenticated answers 401 missing_authorization
        if header[0].lower() != b"bearer" or len(header) != 2:
            raise AuthenticationFailed("Use `Authorization: Bearer <token>`.")
        try:
            return user_for_token(header[1].decode("ascii"))
        except AccountErased as exc:
            raise AuthenticationFailed("This account was erased; sign in again to start a new one.") from exc
        except (InvalidToken, UnicodeDecodeError) as exc:
            raise AuthenticationFailed("The token is not valid.") from exc

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="amy"'
