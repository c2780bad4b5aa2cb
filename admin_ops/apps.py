from django.apps import AppConfig


class AdminOpsConfig(AppConfig):
    name = "admin_ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from celery.signals import worker_ready

        from admin_ops import openapi  # noqa: F401 - registers the schema extension
        from admin_ops.metrics import serve_worker_metrics
        from admin_ops.trace_erasure import traces_forget_user
        from amy import metrics
        from amy.signals import user_erased

        metrics.connect_task_signals()
        user_erased.connect(traces_forget_user, weak=False, dispatch_uid="admin_ops.traces_forget_user")
        worker_ready.connect(serve_worker_metrics, weak=False, dispatch_uid="admin_ops.serve_worker_metrics")
