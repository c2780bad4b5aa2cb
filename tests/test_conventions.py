"""The request id on every response, and the envelope on every non-webhook error."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_every_response_carries_a_new_request_id_in_both_headers(client: Client) -> None:
    response = client.get("/healthz")
    assert response["x-amy-request-id"] == response["X-Request-Id"]
    assert response["x-amy-request-id"].startswith("req_")
    assert len(response["x-amy-request-id"]) == 4 + 26


@pytest.mark.parametrize("header", ["x-amy-request-id", "X-Request-Id"])
def test_a_well_formed_incoming_request_id_is_reused(client: Client, header: str) -> None:
    response = client.get("/healthz", headers={header: "abc.DEF:1-2_3"})
    assert response["x-amy-request-id"] == "abc.DEF:1-2_3"


@pytest.mark.parametrize("incoming", ["", "x" * 129, "has space", "semi;colon", "ünï"])
def test_a_malformed_incoming_request_id_is_replaced(client: Client, incoming: str) -> None:
    response = client.get("/healthz", headers={"x-amy-request-id": incoming})
    assert response["x-amy-request-id"].startswith("req_")


@pytest.mark.parametrize("path", ["/nope", "/v1/unknown", "/admin/nothing", "/console", "/webhooks/terra/extra"])
def test_an_unknown_path_is_404_in_the_envelope(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response["content-type"] == "application/json"
    assert response.json() == {
        "error": {
            "code": "not_found",
            "message": "No such path.",
            "request_id": response["x-amy-request-id"],
            "docs_url": "https://api.amy.health/docs/errors#not_found",
        }
    }


def test_an_unknown_path_is_404_in_the_envelope_with_debug_on(client: Client, settings) -> None:
    settings.DEBUG = True
    response = client.post("/nope/at/all")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("method", ["post", "put", "delete", "patch"])
def test_a_wrong_method_on_healthz_is_405_in_the_envelope(client: Client, method: str) -> None:
    response = getattr(client, method)("/healthz")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response.json()["error"]["request_id"] == response["x-amy-request-id"]


def test_healthz_answers_ok_with_the_environment(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "environment": "development"}


def test_healthz_answers_503_in_the_envelope_when_the_database_does_not(client: Client) -> None:
    from django.db import connection

    # given: a connection that cannot reach a database (a closed port)
    original = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update({"PORT": "1", "CONN_MAX_AGE": 0})
    try:
        # when
        response = client.get("/healthz")
    finally:
        connection.close()
        connection.settings_dict.update(original)
    # then
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("delete", "/v1/connections/null", 404), ("post", "/nope", 404), ("post", "/healthz", 405), ("put", "/", 405)],
)
def test_unsafe_methods_get_the_envelope_even_with_csrf_checks_on(method: str, path: str, status: int) -> None:
    # The browser-less clients of these paths never carry a CSRF token.
    client = Client(enforce_csrf_checks=True)
    response = getattr(client, method)(path)
    assert response.status_code == status
    assert response["content-type"] == "application/json"
    assert response.json()["error"]["request_id"] == response["x-amy-request-id"]
