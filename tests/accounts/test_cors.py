"""CORS on `/v1/*` for the origins in CORS_ALLOWED_ORIGINS, and nowhere else."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

ALLOWED = "https://app.amy.example"


@pytest.fixture(autouse=True)
def allowed_origin(settings) -> None:
    settings.CORS_ALLOWED_ORIGINS = [ALLOWED]


def preflight(client: Client, path: str, origin: str):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )


def test_a_preflight_from_an_allowed_origin_is_answered_for_the_api(client: Client) -> None:
    response = preflight(client, "/v1/me", ALLOWED)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ALLOWED
    assert "authorization" in response["Access-Control-Allow-Headers"]


def test_an_api_error_carries_the_cors_headers_and_exposes_the_request_id(client: Client) -> None:
    response = client.get("/v1/me", headers={"Origin": ALLOWED})
    assert response.status_code == 401
    assert response["Access-Control-Allow-Origin"] == ALLOWED
    assert "x-amy-request-id" in response["Access-Control-Expose-Headers"]


def test_another_origin_gets_no_cors_headers(client: Client) -> None:
    response = preflight(client, "/v1/me", "https://evil.example")
    assert "Access-Control-Allow-Origin" not in response


@pytest.mark.parametrize("path", ["/webhooks/terra", "/admin/healthz", "/console/"])
def test_paths_outside_the_api_get_no_cors_headers(client: Client, path: str) -> None:
    assert "Access-Control-Allow-Origin" not in preflight(client, path, ALLOWED)
