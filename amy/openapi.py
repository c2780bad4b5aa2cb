"""OpenAPI (drf-spectacular): the error envelope on every operation, and the non-DRF endpoints."""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "request_id", "docs_url"],
            "properties": {
                "code": {"type": "string", "example": "invalid_field"},
                "message": {"type": "string"},
                "request_id": {"type": "string", "example": "req_01JD9Y8Q6M4X7G3N2P5R8T0V1W"},
                "docs_url": {"type": "string", "format": "uri"},
                "details": {"type": "object", "additionalProperties": True},
            },
        }
    },
}

_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_DESCRIPTIONS = {
    "400": "Malformed or missing input (`invalid_request`, `invalid_field`, ...).",
    "401": "`missing_authorization` or `invalid_token`.",
    "403": "`forbidden`.",
    "404": "`<resource>_not_found`: unknown, or another user's.",
    "405": "`method_not_allowed`.",
    "409": "`idempotency_key_mismatch` or `idempotency_key_in_use`.",
    "429": "`rate_limit_exceeded`, with `Retry-After`.",
    "500": "`internal_error`.",
    "503": "`unavailable`: the database is not answering.",
}

_WEBHOOK_ERROR = {
    "type": "object",
    "required": ["error", "request_id"],
    "properties": {
        "error": {"type": "string", "enum": ["invalid_signature", "invalid_json", "payload_too_large", "unavailable"]},
        "reason": {"type": "string", "enum": ["missing_header", "malformed_header", "stale", "mismatch"]},
        "request_id": {"type": "string"},
    },
}


def _error(status: str) -> dict[str, Any]:
    return {"description": _DESCRIPTIONS[status], "content": {"application/json": {"schema": _ERROR_REF}}}


def _webhook_operation() -> dict[str, Any]:
    def flat(description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": _WEBHOOK_ERROR}}}

    return {
        "operationId": "terra_webhook",
        "summary": "Terra webhook (signed); aliases /webhook/terra, /webhook, /terra, /",
        "tags": ["webhook"],
        "security": [],
        "parameters": [
            {"name": "terra-signature", "in": "header", "required": True, "schema": {"type": "string"}},
            {"name": "X-Terra-Trace-Id", "in": "header", "required": False, "schema": {"type": "string"}},
            {"name": "terra-reference", "in": "header", "required": False, "schema": {"type": "string"}},
            {"name": "x-terra-ordering-timestamp", "in": "header", "required": False, "schema": {"type": "string"}},
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
        "responses": {
            "200": {
                "description": "Stored (or a duplicate of a stored body).",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["ok", "type", "request_id"],
                            "properties": {
                                "ok": {"type": "boolean"},
                                "raw_event_id": {"type": "integer"},
                                "duplicate": {"type": "boolean"},
                                "type": {"type": "string"},
                                "request_id": {"type": "string"},
                            },
                        }
                    }
                },
            },
            "400": flat("`invalid_json`."),
            "401": flat("`invalid_signature` with a `reason`."),
            "405": _error("405"),
            "413": flat("`payload_too_large`."),
            "503": flat("`unavailable`: not stored; Terra retries."),
        },
    }


def _healthz_operation() -> dict[str, Any]:
    return {
        "operationId": "healthz",
        "summary": "Liveness: a SELECT 1",
        "tags": ["operations"],
        "security": [],
        "responses": {
            "200": {
                "description": "The database answers.",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["ok", "environment"],
                            "properties": {"ok": {"type": "boolean"}, "environment": {"type": "string"}},
                        }
                    }
                },
            },
            "405": _error("405"),
            "503": _error("503"),
        },
    }


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: document the envelope on every operation."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            statuses = ["405", "429", "500", "503"]
            if operation.get("requestBody") or operation.get("parameters"):
                statuses.append("400")
            if operation.get("security") != [] and any(operation.get("security", [{}])):
                statuses.append("401")
            if "{" in path:
                statuses.append("404")
            if method == "post" and path.startswith("/v1/") and not path.startswith("/v1/auth/"):
                statuses.append("409")
            for status in statuses:
                responses.setdefault(status, _error(status))
    result["paths"]["/webhooks/terra"] = {"post": _webhook_operation()}
    result["paths"]["/healthz"] = {"get": _healthz_operation()}
    return result
