"""The import endpoints; amy/urls.py includes these, and tests use this URLconf alone."""

from __future__ import annotations

from django.urls import path

from ingest.imports.views import ImportCreateApi, ImportDetailApi

urlpatterns = [
    path("v1/import", ImportCreateApi.as_view()),
    path("v1/import/<int:import_id>", ImportDetailApi.as_view()),
]
