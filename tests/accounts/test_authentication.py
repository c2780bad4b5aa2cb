"""Bearer tokens: Amy CLI tokens (HS256) and Clerk session tokens (RS256 via JWKS)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest
from django.test import Client

from accounts.models import CliToken, User
from accounts.tokens import cli_token_issue, cli_token_revoke
from tests.fake_clerk import FakeClerk, SigningKey

pytestmark = pytest.mark.django_db


def me(client: Client, token: str | None = None, scheme: str = "Bearer"):
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    return client.get("/v1/me", headers=headers)


def assert_401(response, code: str) -> None:
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["request_id"] == response["x-amy-request-id"]


def cli_claims(**overrides) -> dict:
    now = int(time.time())
    return {"sub": "user_cli_1", "iat": now, "exp": now + 3600, "v": 1, **overrides}


def hs256(claims: dict, secret: str | bytes) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


# --- CLI tokens -----------------------------------------------------------------------------------


def test_an_issued_cli_token_authenticates_and_creates_the_user_on_first_call(client: Client) -> None:
    issued = cli_token_issue(user=User.objects.create(id="user_cli_1"))
    response = me(client, issued.token)
    assert response.status_code == 200
    assert response.json()["user"]["id"] == "user_cli_1"
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    assert set(claims) == {"sub", "iat", "exp", "v", "jti"}
    assert claims["exp"] - claims["iat"] == 30 * 86400
    assert jwt.get_unverified_header(issued.token) == {"alg": "HS256", "typ": "JWT"}


def test_a_token_in_the_sources_shape_without_jti_is_valid_until_it_expires(client: Client, settings) -> None:
    response = me(client, hs256(cli_claims(sub="user_legacy"), settings.AMY_JWT_SECRET))
    assert response.status_code == 200
    assert User.objects.filter(id="user_legacy").exists()  # the lazy upsert


def test_no_authorization_header_is_missing_authorization(client: Client) -> None:
    assert_401(me(client), "missing_authorization")


@pytest.mark.parametrize("scheme", ["Basic", "Token", "bearer-ish"])
def test_another_scheme_is_invalid_token(client: Client, scheme: str) -> None:
    assert_401(me(client, "abc", scheme=scheme), "invalid_token")


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "x" * 10_000, "ünï.cödé.x"])
def test_a_token_that_is_not_a_jwt_is_invalid_token(client: Client, token: str) -> None:
    assert_401(me(client, token), "invalid_token")


def test_an_expired_cli_token_is_refused(client: Client, settings) -> None:
    token = hs256(cli_claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 10), settings.AMY_JWT_SECRET)
    assert_401(me(client, token), "invalid_token")


def test_a_cli_token_signed_with_another_secret_is_refused(client: Client) -> None:
    assert_401(me(client, hs256(cli_claims(), "not-the-secret-0123456789abcdef0123")), "invalid_token")


@pytest.mark.parametrize("missing", ["sub", "iat", "exp"])
def test_a_cli_token_missing_a_required_claim_is_refused(client: Client, settings, missing: str) -> None:
    claims = cli_claims()
    del claims[missing]
    assert_401(me(client, hs256(claims, settings.AMY_JWT_SECRET)), "invalid_token")


def test_a_cli_token_of_another_version_is_refused(client: Client, settings) -> None:
    assert_401(me(client, hs256(cli_claims(v=2), settings.AMY_JWT_SECRET)), "invalid_token")


def test_a_revoked_cli_token_is_refused(client: Client) -> None:
    issued = cli_token_issue(user=User.objects.create(id="user_cli_1"))
    cli_token_revoke(jti=CliToken.objects.get().jti)
    assert_401(me(client, issued.token), "invalid_token")


def test_a_token_with_an_unknown_jti_is_refused(client: Client, settings) -> None:
    assert_401(me(client, hs256(cli_claims(jti="never-issued"), settings.AMY_JWT_SECRET)), "invalid_token")


def _unsigned(header: dict, claims: dict) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(client: Client, alg: str) -> None:
    assert_401(me(client, _unsigned({"alg": alg, "typ": "JWT"}, cli_claims())), "invalid_token")


@pytest.mark.parametrize("alg", ["HS512", "RS512", "ES256", "PS256"])
def test_other_algorithms_are_refused(client: Client, alg: str) -> None:
    assert_401(me(client, _unsigned({"alg": alg, "typ": "JWT"}, cli_claims()) + "c2ln"), "invalid_token")


# --- Clerk session tokens ----------------------------------------------------------------------------


def test_a_clerk_session_token_authenticates_and_creates_the_user(client: Client, fake_clerk: FakeClerk) -> None:
    response = me(client, fake_clerk.token("user_clerk_1"))
    assert response.status_code == 200
    assert response.json()["user"]["id"] == "user_clerk_1"
    assert User.objects.filter(id="user_clerk_1").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": int(time.time()) - 60},  # expired
        {"nbf": int(time.time()) + 600},  # not yet valid
        {"iss": "https://evil.example"},  # wrong issuer
        {"azp": "https://evil.example"},  # not an authorized party
        {"nbf": None},  # nbf is required
        {"exp": None},  # exp is required
        {"iss": None},  # iss is required
    ],
    ids=["expired", "not-yet-valid", "wrong-issuer", "wrong-azp", "no-nbf", "no-exp", "no-iss"],
)
def test_a_bad_clerk_token_is_refused(client: Client, fake_clerk: FakeClerk, overrides: dict) -> None:
    assert_401(me(client, fake_clerk.token(**overrides)), "invalid_token")


def test_a_clerk_token_without_azp_is_accepted(client: Client, fake_clerk: FakeClerk) -> None:
    assert me(client, fake_clerk.token(azp=None)).status_code == 200


def test_a_token_signed_by_another_key_with_a_known_kid_is_refused(client: Client, fake_clerk: FakeClerk) -> None:
    impostor = SigningKey("key-1")  # same kid, different private key
    assert_401(me(client, fake_clerk.token(key=impostor)), "invalid_token")


def test_an_hs256_token_signed_with_the_clerk_public_key_is_refused(client: Client, fake_clerk: FakeClerk) -> None:
    # The classic algorithm confusion: an HMAC keyed with the public PEM (PyJWT itself refuses to
    # make one, so it is made by hand).
    now = int(time.time())
    claims = {"sub": "attacker", "iss": "https://clerk.amy.example", "nbf": now, "exp": now + 60, "iat": now}
    signing_input = _unsigned({"alg": "HS256", "typ": "JWT", "kid": "key-1"}, claims).rstrip(".")
    mac = hmac.new(fake_clerk.keys[0].public_pem(), signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert_401(me(client, forged), "invalid_token")
    assert not User.objects.filter(id="attacker").exists()


def test_an_unknown_kid_storm_fetches_the_jwks_at_most_once_a_minute(client: Client, fake_clerk: FakeClerk) -> None:
    # given: the key set is cached
    assert me(client, fake_clerk.token()).status_code == 200
    fetches = fake_clerk.fetches
    # when: many tokens with random kids arrive
    for _ in range(50):
        stranger = SigningKey(f"kid-{uuid.uuid4()}")
        stranger.private = fake_clerk.keys[0].private
        assert_401(me(client, fake_clerk.token(key=stranger)), "invalid_token")
    # then: at most one refetch
    assert fake_clerk.fetches - fetches <= 1


def test_a_rotated_jwks_keeps_working(client: Client, fake_clerk: FakeClerk, settings) -> None:
    settings.CLERK_JWKS_REFETCH_SECONDS = 0.2
    old = fake_clerk.keys[0]
    assert me(client, fake_clerk.token(key=old)).status_code == 200
    # Clerk publishes a new key beside the old one, then signs with it
    new = SigningKey("key-2")
    fake_clerk.keys = [old, new]
    time.sleep(0.3)
    assert me(client, fake_clerk.token(key=new)).status_code == 200
    assert me(client, fake_clerk.token(key=old)).status_code == 200
    # and retires the old one
    fake_clerk.keys = [new]
    assert me(client, fake_clerk.token(key=new)).status_code == 200


def test_cached_keys_keep_working_while_the_jwks_is_down(client: Client, fake_clerk: FakeClerk, settings) -> None:
    assert me(client, fake_clerk.token()).status_code == 200
    fake_clerk.down = True
    settings.CLERK_JWKS_CACHE_SECONDS = 0  # the cache is stale: a refetch is due, and fails
    settings.CLERK_JWKS_REFETCH_SECONDS = 0
    assert me(client, fake_clerk.token()).status_code == 200


def test_clerk_tokens_are_refused_when_clerk_is_not_configured(client: Client, fake_clerk: FakeClerk, settings) -> None:
    settings.CLERK_JWKS_URL = ""
    assert_401(me(client, fake_clerk.token()), "invalid_token")


def test_a_user_over_the_per_minute_limit_gets_429_with_retry_after(client: Client, settings) -> None:
    from django.core.cache import cache

    settings.AMY_USER_RATE_PER_MINUTE = 3
    token = cli_token_issue(user=User.objects.create(id="user_busy")).token
    cache.delete("throttle_user_user_busy")
    statuses = [me(client, token).status_code for _ in range(4)]
    cache.delete("throttle_user_user_busy")
    assert statuses == [200, 200, 200, 429]
