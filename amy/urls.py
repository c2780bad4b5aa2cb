from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

from admin_ops.views import healthz
from amy.exception_handler import not_found
from ingest.api_views import ConnectApi, ConnectionDeleteApi, MeApi
from ingest.sync_views import SyncApi
from ingest.views import TerraWebhookView

webhook = TerraWebhookView.as_view()


urlpatterns = [
    path("healthz", healthz),
    path("openapi.json", SpectacularJSONAPIView.as_view(authentication_classes=[], permission_classes=[])),
    path(
        "docs",
        SpectacularSwaggerView.as_view(url="/openapi.json", authentication_classes=[], permission_classes=[]),
    ),
    path("console/", admin.site.urls),
    path("v1/me", MeApi.as_view()),
    path("v1/connect", ConnectApi.as_view()),
    path("v1/sources/terra/connect", ConnectApi.as_view()),
    path("v1/connections/<int:connection_id>", ConnectionDeleteApi.as_view()),
    path("v1/sync", SyncApi.as_view()),
    path("", include("ingest.labs.urls")),
    path("", include("ingest.imports.urls")),
    path("", include("admin_ops.urls")),
    path("", include("accounts.urls")),
    # Terra's webhook and its four aliases.
    path("webhooks/terra", webhook),
    path("webhook/terra", webhook),
    path("webhook", webhook),
    path("terra", webhook),
    path("", webhook),
    # A catch-all rather than handler404 alone, so unknown paths answer the envelope even with
    # DEBUG on (Django's debug 404 page is HTML).
    re_path(r"^.*$", not_found),
]

handler400 = "amy.exception_handler.bad_request"
handler403 = "amy.exception_handler.permission_denied"
handler404 = "amy.exception_handler.not_found"
handler500 = "amy.exception_handler.server_error"
