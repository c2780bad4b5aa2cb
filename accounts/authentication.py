"""`Authorization: Bearer <token>` for the API: Amy CLI tokens (HS256) and Clerk session tokens
(RS256). The verifier is chosen by the token header's `alg` before anything is verified, and each
path pins its own algorithm and key type (SPEC §5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import jwt
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from accounts.clerk import clerk_token_verify
from accounts.models import User
from accounts.tokens import InvalidToken, cli_token_verify

_MAX_TOKEN_LENGTH = 8192


@dataclass(frozen=True)
class TokenInfo:
    """`request.auth` of an authenticated request: which kind of token, and its claims."""

    kind: Literal["cli", "clerk"]
    claims: dict[str, Any]


def user_for_token(token: str) -> tuple[User, TokenInfo]:
    """The user a bearer token names (created on first sight: SPEC's lazy upsert) and its claims."""
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
    user, _ = User.objects.get_or_create(id=info.claims["sub"])
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
        except (InvalidToken, UnicodeDecodeError) as exc:
            raise AuthenticationFailed("The token is not valid.") from exc

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="amy"'
