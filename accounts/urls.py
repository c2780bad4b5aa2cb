"""The CLI login (device flow), logout and the browser page that approves a login.

Self-sufficient, so tests can use it as the whole URLconf; amy/urls.py includes it.
"""

from __future__ import annotations

from django.urls import path

from accounts.views import (
    CliTokenApi,
    CliTokenListApi,
    DeviceLoginApproveApi,
    DeviceLoginStartApi,
    DeviceLoginTokenApi,
    LogoutApi,
    cli_login_page,
)

urlpatterns = [
    path("v1/auth/device", DeviceLoginStartApi.as_view(), name="device-login-start"),
    path("v1/auth/cli-approve", DeviceLoginApproveApi.as_view(), name="device-login-approve"),
    path("v1/auth/token", DeviceLoginTokenApi.as_view(), name="device-login-token"),
    path("v1/auth/logout", LogoutApi.as_view(), name="logout"),
    path("v1/auth/tokens", CliTokenListApi.as_view(), name="cli-tokens"),
    path("v1/auth/tokens/<str:token_id>", CliTokenApi.as_view(), name="cli-token"),
    path("cli/login", cli_login_page, name="cli-login"),
]
