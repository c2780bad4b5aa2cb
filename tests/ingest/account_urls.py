"""URLs for tests/ingest/test_terra_account.py, so those tests do not depend on amy/urls.py's wiring."""

from __future__ import annotations

from django.urls import path

from ingest.api_views import ConnectApi, ConnectionDeleteApi, MeApi

urlpatterns = [
    path("v1/me", MeApi.as_view()),
    path("v1/connect", ConnectApi.as_view()),
    path("v1/sources/terra/connect", ConnectApi.as_view()),
    path("v1/connections/<int:connection_id>", ConnectionDeleteApi.as_view()),
]
