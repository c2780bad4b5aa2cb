"""`django.contrib.admin` with the console's site as the default one (no model imports here: the
app registry loads this module before any model)."""

from django.contrib.admin.apps import AdminConfig


class ConsoleAdminConfig(AdminConfig):
    default_site = "admin_ops.console_site.ConsoleSite"
