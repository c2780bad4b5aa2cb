"""Every URL of admin_ops: the JSON ops API under /admin (the ops key), /admin/traces and /metrics.
amy/urls.py includes it before the catch-all; tests may use it alone
(`@pytest.mark.urls("admin_ops.urls")`)."""

from __future__ import annotations

from django.urls import path

from admin_ops.metrics import MetricsView
from admin_ops.trace_views import TracesApi
from admin_ops.views import (
    AdminHealthApi,
    DeadLetterListApi,
    DeadLetterReplayApi,
    RawEventDetailApi,
    RawEventReplayApi,
    UserSnapshotApi,
)

urlpatterns = [
    path("admin/healthz", AdminHealthApi.as_view()),
    path("admin/dlq", DeadLetterListApi.as_view()),
    path("admin/dlq/replay", DeadLetterReplayApi.as_view()),
    path("admin/raw-events/<int:raw_event_id>", RawEventDetailApi.as_view()),
    path("admin/raw-events/<int:raw_event_id>/replay", RawEventReplayApi.as_view()),
    path("admin/user/<str:user_id>", UserSnapshotApi.as_view()),
    path("admin/traces", TracesApi.as_view()),
    path("metrics", MetricsView.as_view()),
]
