"""How the OpenAPI schema describes the ops key."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class AdminKeyScheme(OpenApiAuthenticationExtension):
    target_class = "admin_ops.auth.AdminKeyAuthentication"
    name = "adminKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "x-admin-key",
            "description": "AMY_ADMIN_KEY (everything) or AMY_ADMIN_READ_KEY (GET only).",
        }
