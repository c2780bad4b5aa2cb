"""Clerk session tokens: RS256 against Clerk's JWKS, which we cache.

PyJWT's own JWKS client refetches on every unknown `kid`, which would let random kids turn into
one outbound call per request; this cache refetches for an unknown kid at most once per
CLERK_JWKS_REFETCH_SECONDS, keeps serving the keys it has while a fetch fails, and never takes
the JWKS address from the token.

A user's email comes from the session token's `email` claim when the Clerk instance adds one (its
session token template), else, once, when the user is first seen, from Clerk's Backend API.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import quote

import httpx
import jwt
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from jwt.algorithms import RSAAlgorithm

from accounts.models import User
from accounts.tokens import InvalidToken

logger = logging.getLogger(__name__)

ALGORITHM = "RS256"


class JwksCache:
    def __init__(self) -> None:
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0  # last successful fetch
        self._attempted_at = float("-inf")  # last attempt, successful or not
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._keys, self._fetched_at, self._attempted_at = {}, 0.0, float("-inf")

    def _fetch(self) -> None:
        self._attempted_at = time.monotonic()
        try:
            response = httpx.get(settings.CLERK_JWKS_URL, timeout=settings.CLERK_JWKS_TIMEOUT_SECONDS)
            response.raise_for_status()
            keys = {}
            for jwk in response.json().get("keys", []):
                if jwk.get("kty") == "RSA" and jwk.get("kid") and jwk.get("use", "sig") == "sig":
                    keys[jwk["kid"]] = RSAAlgorithm.from_jwk(jwk)
        except (httpx.HTTPError, ValueError, AttributeError, TypeError, jwt.InvalidKeyError) as exc:
            logger.warning("JWKS fetch failed, keeping %d cached keys: %s", len(self._keys), type(exc).__name__)
            return
        self._keys, self._fetched_at = keys, time.monotonic()

    def key(self, kid: str) -> Any:
        with self._lock:
            now = time.monotonic()
            expired = now - self._fetched_at > settings.CLERK_JWKS_CACHE_SECONDS
            may_refetch = now - self._attempted_at >= settings.CLERK_JWKS_REFETCH_SECONDS
            if (expired or kid not in self._keys) and may_refetch:
                self._fetch()
            return self._keys.get(kid)


jwks = JwksCache()


def clerk_token_verify(token: str, kid: str | None) -> dict[str, Any]:
    """The claims of a valid Clerk session token; InvalidToken otherwise."""
    if not settings.CLERK_JWKS_URL or not settings.CLERK_ISSUER:
        raise InvalidToken("Clerk sign-in is not configured")
    if not kid:
        raise InvalidToken("token has no kid")
    key = jwks.key(kid)
    if key is None:
        raise InvalidToken("unknown signing key")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],  # pinned: an HS256 token "signed" with the public key fails here
            issuer=settings.CLERK_ISSUER,
            leeway=settings.CLERK_LEEWAY_SECONDS,
            options={"require": ["exp", "nbf", "iss", "sub"], "verify_aud": False},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    azp = claims.get("azp")
    if azp is not None and azp not in settings.CLERK_AUTHORIZED_PARTIES:
        raise InvalidToken("azp is not an authorized party")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise InvalidToken("no subject")
    return claims


# Email ------------------------------------------------------------------------------------------------

_EMAIL_MAX_LENGTH = 254  # User.email's column


def _email(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > _EMAIL_MAX_LENGTH:
        return None
    try:
        validate_email(value)
    except ValidationError:
        return None
    return value


def clerk_user_email(user_id: str) -> str | None:
    """The primary email address of a Clerk user (`GET /users/{id}` of the Backend API); None
    without CLERK_SECRET_KEY, when Clerk fails or is slow, or when the user has none."""
    if not settings.CLERK_SECRET_KEY:
        return None
    try:
        response = httpx.get(
            f"{settings.CLERK_API_URL}/users/{quote(user_id, safe='')}",
            headers={"Authorization": f"Bearer {settings.CLERK_SECRET_KEY}"},
            timeout=settings.CLERK_API_TIMEOUT_SECONDS,
        )
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        logger.warning("Clerk user lookup failed, email left unset: %s", type(exc).__name__)
        return None
    if not isinstance(body, dict):
        return None
    primary = body.get("primary_email_address_id")
    addresses = body.get("email_addresses")
    for address in addresses if isinstance(addresses, list) else []:
        if isinstance(address, dict) and primary is not None and address.get("id") == primary:
            return _email(address.get("email_address"))
    return None


def clerk_email_remember(user: User, claims: dict[str, Any], *, first_sight: bool) -> None:
    """Store the user's email: the token's `email` claim when present (kept current), else on the
    user's first sight the Backend API's answer. One outbound call per new user at most."""
    email = _email(claims.get("email"))
    if email is None and first_sight and user.email is None:
        email = clerk_user_email(user.pk)
    if email is not None and email != user.email:
        User.objects.filter(pk=user.pk).update(email=email)
        user.email = email
