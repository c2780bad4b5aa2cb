from django.apps import AppConfig


class AdminOpsConfig(AppConfig):
    name = "admin_ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from admin_ops import openapi  # noqa: F401 - registers the schema extension
        from amy import metrics

        metrics.connect_task_signals()
