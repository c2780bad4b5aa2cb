"""The console's admin site: the pipeline at a glance on its home page, and triage by group.

`admin_ops.console_apps.ConsoleAdminConfig` makes `ConsoleSite` Django's default admin site
(INSTALLED_APPS names it in place of `django.contrib.admin`), so every `@admin.register` in the
project lands here.

Triage of one dead-letter group (dead rows of a window that share an error signature,
admin_ops/pipeline.py): its events, a dry run of a replay (the typed rows it would write, nothing
kept), and replay or mark skipped for the whole group, each behind a confirmation page and
recorded as an `AuditRecord`. The writes go through the ops services (admin_ops/services.py), the
same ones the JSON endpoints and the commands use.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path, reverse
from django.utils.http import urlencode

from admin_ops.pipeline import (
    OLDEST_WAITING_WARNING_SECONDS,
    DeadGroup,
    clamp_hours,
    dead_letter_group,
    format_age,
    pipeline_glance,
)
from admin_ops.services import (
    UNHEALTHY_ERRORED,
    DryRunResult,
    raw_event_replay_dry_run,
    raw_events_mark_skipped,
    raw_events_replay,
)
from amy.errors import ApiError
from amy.exception_handler import permission_denied
from ingest.models import RawEvent

GROUP_ROWS_SHOWN = 200
CONFIRM_ROWS_SHOWN = 100
DRY_RUN_EVENTS = 5
_CHART_WIDTH, _CHART_HEIGHT = 600, 60
_ROW_FIELDS = (
    "id",
    "event_type",
    "terra_user_id",
    "provider",
    "state",
    "process_error",
    "attempts",
    "dead_lettered_at",
)


class ConsoleSite(admin.AdminSite):
    site_header = "Amy console"
    site_title = "Amy console"
    index_title = "Operations"
    index_template = "admin_ops/console/index.html"

    # The home page -------------------------------------------------------------------------------

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        context: dict[str, Any] = {**(extra_context or {})}
        try:
            glance = pipeline_glance()
        except DatabaseError as exc:
            context["glance_error"] = f"The ledger is not answering ({type(exc).__name__})."
        else:
            context.update(
                glance=glance,
                chart=_chart(glance.per_minute, glance.peak_per_minute),
                oldest_waiting=format_age(glance.oldest_waiting_age) if glance.oldest_waiting_age is not None else None,
                waiting_limit=format_age(OLDEST_WAITING_WARNING_SECONDS),
                dead_limit=UNHEALTHY_ERRORED,
            )
        return super().index(request, context)

    # Triage URLs ---------------------------------------------------------------------------------

    def get_urls(self) -> list[URLResolver | URLPattern]:
        triage = [
            path("pipeline/dead-letters/<str:key>/", self.admin_view(self.group_view), name="dead_letter_group"),
            path(
                "pipeline/dead-letters/<str:key>/dry-run/",
                self.admin_view(self.group_dry_run_view),
                name="dead_letter_group_dry_run",
            ),
            path(
                "pipeline/dead-letters/<str:key>/replay/",
                self.admin_view(self.group_replay_view),
                name="dead_letter_group_replay",
            ),
            path(
                "pipeline/dead-letters/<str:key>/skip/",
                self.admin_view(self.group_skip_view),
                name="dead_letter_group_skip",
            ),
            path(
                "pipeline/raw-events/<int:raw_event_id>/dry-run/",
                self.admin_view(self.raw_event_dry_run_view),
                name="raw_event_dry_run",
            ),
        ]
        return triage + super().get_urls()

    def _context(self, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
        return {**self.each_context(request), "title": title, "opts": RawEvent._meta, **extra}

    def _group(self, request: HttpRequest, key: str) -> tuple[DeadGroup | None, int]:
        hours = clamp_hours(request.GET.get("hours") or request.POST.get("hours"))
        group, _ = dead_letter_group(key=key, hours=hours)
        return group, hours

    def _gone(self, request: HttpRequest, hours: int) -> HttpResponse:
        _say(
            request,
            f"No dead event of the last {hours} h has that error any more (replayed, skipped or older).",
            messages.WARNING,
        )
        return HttpResponseRedirect(reverse(f"{self.name}:index"))

    def group_view(self, request: HttpRequest, key: str) -> HttpResponse:
        group, hours = self._group(request, key)
        if group is None:
            return self._gone(request, hours)
        rows = _rows(group.ids[:GROUP_ROWS_SHOWN])
        context = self._context(
            request,
            f"Dead letters: {group.count:,} event{'s' if group.count != 1 else ''}",
            group=group,
            hours=hours,
            rows=rows,
            more=max(group.count - len(rows), 0),
            query=urlencode({"hours": hours}),
            can_write=_can_write(request),
        )
        request.current_app = self.name
        return TemplateResponse(request, "admin_ops/console/dead_letter_group.html", context)

    def group_dry_run_view(self, request: HttpRequest, key: str) -> HttpResponse:
        group, hours = self._group(request, key)
        if group is None:
            return self._gone(request, hours)
        results = [_dry_run(raw_event_id) for raw_event_id in group.ids[:DRY_RUN_EVENTS]]
        context = self._context(
            request,
            f"Dry run of a replay: {len(results)} of {group.count:,} events",
            group=group,
            hours=hours,
            results=results,
            query=urlencode({"hours": hours}),
        )
        request.current_app = self.name
        return TemplateResponse(request, "admin_ops/console/dry_run.html", context)

    def raw_event_dry_run_view(self, request: HttpRequest, raw_event_id: int) -> HttpResponse:
        result = _dry_run(raw_event_id)
        if result is None:
            _say(request, f"Raw event {raw_event_id} does not exist.", messages.WARNING)
            return HttpResponseRedirect(reverse(f"{self.name}:index"))
        context = self._context(request, f"Dry run of a replay: raw event {raw_event_id}", results=[result])
        request.current_app = self.name
        return TemplateResponse(request, "admin_ops/console/dry_run.html", context)

    def group_replay_view(self, request: HttpRequest, key: str) -> HttpResponse:
        return self._group_write(request, key, "replay")

    def group_skip_view(self, request: HttpRequest, key: str) -> HttpResponse:
        return self._group_write(request, key, "skip")

    def _group_write(self, request: HttpRequest, key: str, verb: str) -> HttpResponse:
        if not _can_write(request):
            return permission_denied(request)
        group, hours = self._group(request, key)
        if group is None:
            return self._gone(request, hours)
        if request.method != "POST" or request.POST.get("post") != "yes":
            rows = _rows(group.ids[:CONFIRM_ROWS_SHOWN])
            context = self._context(
                request,
                ("Replay" if verb == "replay" else "Mark skipped") + f" {group.count:,} dead events?",
                group=group,
                hours=hours,
                rows=rows,
                more=max(group.count - len(rows), 0),
                verb=verb,
                query=urlencode({"hours": hours}),
            )
            request.current_app = self.name
            return TemplateResponse(request, "admin_ops/console/group_confirmation.html", context)
        actor = request.user.get_username()
        details = {"via": "console", "group": group.key, "signature": group.signature, "hours": hours}
        if verb == "replay":
            result = raw_events_replay(
                actor=actor, ids=group.ids, request_id=getattr(request, "request_id", None), details=details
            )
            _say(
                request,
                f"Replayed {result.replayed:,} of {result.matched:,} dead events of “{group.signature}”.",
                messages.SUCCESS if result.replayed else messages.WARNING,
            )
        else:
            _, updated = raw_events_mark_skipped(ids=group.ids, actor=actor, details=details)
            _say(request, f"Marked {updated:,} dead events of “{group.signature}” skipped.", messages.SUCCESS)
        return HttpResponseRedirect(reverse(f"{self.name}:index"))


def _can_write(request: HttpRequest) -> bool:
    return request.user.has_perm("ingest.change_rawevent")


def _rows(ids: list[int]) -> list[RawEvent]:
    order = {raw_event_id: n for n, raw_event_id in enumerate(ids)}
    rows = list(RawEvent.objects.filter(pk__in=ids).only(*_ROW_FIELDS))
    return sorted(rows, key=lambda row: order[row.pk])


def _dry_run(raw_event_id: int) -> dict[str, Any] | None:
    row = RawEvent.objects.filter(pk=raw_event_id).only(*_ROW_FIELDS).first()
    if row is None:
        return None
    try:
        result: DryRunResult = raw_event_replay_dry_run(raw_event_id=raw_event_id)
    except ApiError as exc:
        return {"row": row, "error": str(exc)}
    tables = [
        {"table": table, "count": len(written), "columns": list(written[0]), "rows": written[:5]}
        for table, written in result.rows.items()
    ]
    return {"row": row, "state": result.state, "reason": result.reason, "tables": tables}


def _chart(per_minute: list[tuple[Any, int]], peak: int) -> list[dict[str, Any]]:
    """Bars of an inline SVG (no script): one per minute, scaled to the busiest."""
    width = _CHART_WIDTH / max(len(per_minute), 1)
    bars = []
    for n, (minute, count) in enumerate(per_minute):
        height = round(count / peak * (_CHART_HEIGHT - 4), 1) if peak else 0
        bars.append(
            {
                "x": round(n * width, 1),
                "y": round(_CHART_HEIGHT - height, 1),
                "width": round(max(width - 1, 1), 1),
                "height": height,
                "title": f"{minute:%H:%M} UTC: {count:,}",
            }
        )
    return bars


def _say(request: HttpRequest, text: str, level: int) -> None:
    messages.add_message(request, level, text)
