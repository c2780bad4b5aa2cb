"""URLs for tests/ingest/test_sync.py, so the sync tests do not depend on amy/urls.py's wiring."""

from __future__ import annotations

from django.urls import path

from ingest.sync_views import SyncApi

urlpatterns = [path("v1/sync", SyncApi.as_view())]
