"""The root URLconf with /admin/traces in front, until the lead wires it into amy/urls.py."""

from django.urls import include, path

from amy.urls import handler400, handler403, handler404, handler500
from amy.urls import urlpatterns as root_patterns

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]

urlpatterns = [path("", include("admin_ops.trace_urls")), *root_patterns]
