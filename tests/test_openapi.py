"""/openapi.json: generated from the code, valid OpenAPI 3, and honoured by the server.

The schema-driven run starts the production web server on the test database and lets
schemathesis generate requests for every operation (valid and invalid, authenticated as a real
user): no answer may be a 5xx, and every answer must match its documented status, content type
and schema.
"""

from __future__ import annotations

import subprocess
import time
from io import StringIO

import jwt
import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client

from tests.conftest import database_url_for_tests
from tests.fake_terra import FakeTerra
from tests.live import BIN, Gunicorn, RedisServer, service_env

pytestmark = pytest.mark.django_db

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
]
OPERATIONS = {
    ("get", "/v1/me"),
    ("post", "/v1/connect"),
    ("post", "/v1/sources/terra/connect"),
    ("delete", "/v1/connections/{connection_id}"),
    ("get", "/v1/sync"),
    ("post", "/v1/auth/device"),
    ("post", "/v1/auth/cli-approve"),
    ("post", "/v1/auth/token"),
    ("post", "/v1/auth/logout"),
    ("get", "/v1/auth/tokens"),
    ("delete", "/v1/auth/tokens/{token_id}"),
    ("post", "/webhooks/terra"),
    ("get", "/healthz"),
    ("post", "/v1/labs"),
    ("post", "/v1/labs/upload"),
    ("get", "/v1/labs"),
    ("get", "/v1/labs/{lab_id}"),
    ("delete", "/v1/labs/{lab_id}"),
    ("get", "/v1/labs/{lab_id}/file"),
    ("post", "/v1/import"),
    ("get", "/v1/import/{import_id}"),
    ("get", "/admin/healthz"),
    ("get", "/admin/dlq"),
    ("post", "/admin/dlq/replay"),
    ("get", "/admin/raw-events/{raw_event_id}"),
    ("post", "/admin/raw-events/{raw_event_id}/replay"),
    ("get", "/admin/user/{user_id}"),
    ("get", "/admin/traces"),
}


def test_the_schema_validates_as_openapi_3_without_warnings(tmp_path) -> None:
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"), stderr=StringIO()
    )


def test_the_schema_is_served_and_covers_every_endpoint_with_its_errors(client: Client) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    operations = {(method, path) for path, item in schema["paths"].items() for method in item}
    assert operations >= OPERATIONS
    for method, path in OPERATIONS:
        responses = schema["paths"][path][method]["responses"]
        assert any(status.startswith("4") for status in responses), (method, path)
    assert "bearerAuth" in schema["components"]["securitySchemes"]
    assert "Error" in schema["components"]["schemas"]


def test_the_docs_page_renders(client: Client) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert b"/openapi.json" in response.content


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_schema_driven_run_finds_no_server_error_and_no_answer_off_the_schema(fake_terra: FakeTerra) -> None:
    # given: the production web server on the test database, and a signed-in user whose token
    # has no jti, so the run's own calls of /v1/auth/logout cannot revoke it halfway
    now = int(time.time())
    claims = {"sub": "schemathesis-user", "iat": now, "exp": now + 3600, "v": 1}
    token = jwt.encode(claims, settings.AMY_JWT_SECRET, algorithm="HS256")
    redis_server = RedisServer()
    redis_server.start()
    env = service_env(
        database_url=database_url_for_tests(),
        redis_url=redis_server.url,
        TERRA_API_BASE_URL=fake_terra.url,  # Terra's side of /v1/connect and the deletes
        TERRA_DEV_ID="test-dev-id",
        TERRA_API_KEY="test-api-key",
    )
    web = Gunicorn(env)
    web.start()
    try:
        # when
        result = subprocess.run(
            [
                str(BIN / "schemathesis"),
                "run",
                f"{web.url}/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                ",".join(CHECKS),
                "--max-examples",
                "25",
                "--seed",
                "20261125",
                "--generation-with-security-parameters",
                "false",
                "--request-timeout",
                "10",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        web.kill()
        redis_server.kill()
    # then
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
