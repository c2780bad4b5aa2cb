"""`/admin/traces`; the root URLconf includes this with `path("", include(...))`."""

from django.urls import path

from admin_ops.trace_views import TracesApi

urlpatterns = [
    path("admin/traces", TracesApi.as_view()),
]
