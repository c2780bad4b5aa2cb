from django.apps import AppConfig


class AdminOpsConfig(AppConfig):
    name = "admin_ops"
    verbose_name = "Operations"
