"""`GET /metrics`. amy/urls.py includes it; tests use `@pytest.mark.urls`."""

from __future__ import annotations

from django.urls import path

from admin_ops.metrics import MetricsView

urlpatterns = [
    path("metrics", MetricsView.as_view()),
]
