"""The operations console: the Django admin mounted at `/console/`.

Built like healthchecks' `PingsAdmin`: the big tables (`raw_events`, `trace_events`)
never run a `COUNT(*)` — `show_full_result_count = False`, no facet counts ("Show counts"), and a
paginator that reads one row past the page instead of counting — their list never loads `payload`,
their filters have fixed choices (no `SELECT DISTINCT` over the table) and their search is exact
matches on indexed columns. Everything is read-only; the only writes are the replay action, which
calls the replay service with the staff username as the actor, and "mark skipped" for dead or
parked rows, each after a confirmation page and recorded as an `AuditRecord`.

A raw event's page opens on what an operator acts on: its state, error and attempts, the actions
(replay, dry run, mark skipped) and its journey (its traces, webhook to worker); the payload comes
last. The home page and the triage of dead-letter groups are the site's (admin_ops/console_site.py).
"""

from __future__ import annotations

import json
import logging
from typing import Any, TypeGuard, cast

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.views.main import PAGE_VAR
from django.core.paginator import Page, Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext

from accounts.models import User
from admin_ops.models import AuditRecord, TraceEvent
from admin_ops.services import raw_events_mark_skipped, raw_events_replay
from admin_ops.trace_views import LEVELS
from ingest.classify import LAB_REPORT, UNKNOWN
from ingest.models import UNPROCESSED_STATES, ImportJob, LabUpload, RawEvent, RawEventState, TerraConnection
from ingest.normalizers import NORMALIZERS

logger = logging.getLogger(__name__)

_MAX_ACTION_ROWS = 10_000
_ERROR_PREVIEW = 80


class NoCountPaginator(Paginator):
    """A paginator that never counts: the changelist shows pages without a `COUNT(*)`.

    Its count is how far the rows are known to go: those before the page asked for, plus that
    page's rows with one row past it, read in the page's own query (which the page then reuses).
    So the pages offered end where the rows do and "next" appears only when there is a next row
    (a fixed count made the console claim a billion rows for three dead letters); a page past the
    end is empty.
    """

    def __init__(self, *args: Any, page_number: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.page_number = max(page_number, 1)

    @cached_property
    def _rows(self) -> list[Any]:
        offset = (self.page_number - 1) * self.per_page
        return list(self.object_list[offset : offset + self.per_page + 1])

    @cached_property
    def count(self) -> int:
        offset = (self.page_number - 1) * self.per_page
        return offset + max(len(self._rows), 1 if offset else 0)

    def page(self, number: Any) -> Page:
        number = self.validate_number(number)
        if number != self.page_number:
            return super().page(number)
        return self._get_page(self._rows[: self.per_page], number, self)  # type: ignore[attr-defined]


class NoCountAdmin(admin.ModelAdmin):
    """A big table's admin: no `COUNT(*)` from the paginator, "show all" or the filters' counts."""

    show_full_result_count = False
    # "Show counts" would run a COUNT per filter over the whole table.
    show_facets = admin.ShowFacets.NEVER

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> Paginator:
        try:
            page_number = int(request.GET.get(PAGE_VAR, 1))
        except ValueError:
            page_number = 1
        return NoCountPaginator(queryset, per_page, orphans, allow_empty_first_page, page_number=page_number)

    @property
    def list_max_show_all(self) -> int:  # type: ignore[override]
        # The count is exact only when every row fits on the first page: "show all" must never
        # load more than one page.
        return self.list_per_page

    def action_checkbox(self, obj: Any) -> SafeString:
        # Django's markup, without rendering the CheckboxInput template for every row: that took a
        # third of a 100-row changelist's render time (bench/console.py).
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            obj.pk,
            format_html(gettext("Select this object for an action - {}"), str(obj)),
        )


class ReadOnlyAdmin(admin.ModelAdmin):
    """A view-only admin: no add, change or delete."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# Raw events and dead letters ---------------------------------------------------------------------


class EventTypeFilter(admin.SimpleListFilter):
    """Fixed choices: the types the normalizers know (no `SELECT DISTINCT` over `raw_events`)."""

    title = "event type"
    parameter_name = "event_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        types = sorted(set(NORMALIZERS) | {LAB_REPORT, UNKNOWN})
        return [(event_type, event_type) for event_type in types]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(event_type=self.value()) if self.value() else queryset


class ProviderFilter(admin.SimpleListFilter):
    """Choices from `terra_connections` (small), not from `raw_events` (big)."""

    title = "provider"
    parameter_name = "provider"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        providers = TerraConnection.objects.exclude(provider="").order_by("provider").values_list("provider", flat=True)
        return [(provider, provider) for provider in providers.distinct()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(provider=self.value()) if self.value() else queryset


def _exact_search(queryset: QuerySet, search_term: str, text_fields: tuple[str, ...]) -> QuerySet:
    """Exact matches only: the id when the term is a number, else the listed (indexed) columns."""
    term = search_term.strip()
    if not term:
        return queryset
    condition = Q()
    if term.isdigit() and len(term) < 19:
        condition |= Q(pk=int(term))
    for name in text_fields:
        condition |= Q(**{name: term})
    return queryset.filter(condition)


@admin.register(RawEvent)
class RawEventAdmin(NoCountAdmin):
    list_display = (
        "id",
        "event_type",
        "state",
        "provider",
        "terra_user_id",
        "received_at",
        "attempts",
        "replay_count",
        "short_error",
    )
    list_filter = ("state", EventTypeFilter, ProviderFilter, "source", "received_at")
    search_fields = ("=terra_user_id", "=request_id")
    search_help_text = "An exact raw event id, Terra user id or request id."
    list_select_related = ()
    raw_id_fields = ("parent", "user")
    ordering = ("-id",)
    list_per_page = 100
    actions = ("replay", "mark_skipped")
    exclude = ("payload",)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).defer("payload")

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        return _exact_search(queryset, search_term, ("terra_user_id", "request_id")), False

    change_form_template = "admin_ops/console/raw_event_change_form.html"
    fieldsets = (
        (
            "Processing",
            {
                "fields": (
                    ("state", "attempts"),
                    "process_error",
                    ("received_at", "queued_at"),
                    ("processed_at", "dead_lettered_at", "lease_until"),
                    ("replay_count", "last_replayed_at", "last_replayed_by"),
                )
            },
        ),
        (
            "Event",
            {
                "fields": (
                    ("event_type", "source"),
                    ("terra_user_id", "provider"),
                    "user",
                    "reference_id",
                    ("request_id", "trace_id"),
                    ("terra_reference", "ordering_ts"),
                    "parent",
                    "import_id",
                    ("dedup_key", "signature_verified"),
                )
            },
        ),
        ("Payload", {"fields": ("pretty_payload",)}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in self.model._meta.concrete_fields if field.name != "payload"] + [
            "pretty_payload"
        ]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # Every field is read-only: no save buttons. The page opens on what an operator acts on.
        extra_context = {
            **(extra_context or {}),
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        raw_event = RawEvent.objects.filter(pk=object_id).defer("payload").first() if _is_id(object_id) else None
        if raw_event is not None:
            extra_context.update(
                title=f"Raw event {raw_event.pk}",
                raw_event=raw_event,
                journey=raw_event_journey(raw_event),
                journey_limit=_JOURNEY_LIMIT,
                can_replay=raw_event.state not in UNPROCESSED_STATES,
                can_skip=raw_event.state in (RawEventState.DEAD, RawEventState.PARKED),
                can_write=self.has_change_permission(request, raw_event),
                action_checkbox_name=helpers.ACTION_CHECKBOX_NAME,
            )
        return super().changeform_view(request, object_id, form_url, extra_context)

    @admin.display(description="error")
    def short_error(self, obj: RawEvent) -> str:
        error = obj.process_error or ""
        return error if len(error) <= _ERROR_PREVIEW else error[: _ERROR_PREVIEW - 1] + "…"

    @admin.display(description="payload")
    def pretty_payload(self, obj: RawEvent) -> str:
        if obj.payload is None:
            return "(erased)"
        try:
            text = json.dumps(json.loads(obj.payload), indent=2, ensure_ascii=False)
        except ValueError:
            text = obj.payload
        return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)

    def _confirmation(self, request: HttpRequest, ids: list[int], action_name: str, title: str) -> TemplateResponse:
        rows = RawEvent.objects.filter(pk__in=ids[:100]).defer("payload").order_by("-id")
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.model._meta,
            "rows": rows,
            "selected_ids": ids,
            "more": max(len(ids) - 100, 0),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "action_name": action_name,
            "query_string": request.GET.urlencode(),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin_ops/action_confirmation.html", context)

    @admin.action(description="Replay selected raw events", permissions=("change",))
    def replay(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        """Back to `received` through the replay service, after a confirmation page."""
        ids = list(queryset.order_by("-id").values_list("pk", flat=True)[:_MAX_ACTION_ROWS])
        if request.POST.get("post") != "yes":
            return self._confirmation(request, ids, "replay", "Replay raw events?")
        result = raw_events_replay(
            actor=request.user.get_username(),
            ids=ids,
            request_id=_request_id(request),
            details={"via": "console"},
        )
        self.message_user(
            request,
            f"Replayed {result.replayed} of {result.matched} raw events ({result.skipped} left alone: already queued).",
            messages.SUCCESS if result.replayed else messages.WARNING,
        )
        return None

    @admin.action(description="Mark selected dead or parked raw events skipped", permissions=("change",))
    def mark_skipped(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        """Give up on dead or parked rows (`skipped:manual`), after a confirmation page; other
        states are left alone."""
        ids = list(queryset.order_by("-id").values_list("pk", flat=True)[:_MAX_ACTION_ROWS])
        if request.POST.get("post") != "yes":
            return self._confirmation(request, ids, "mark_skipped", "Mark raw events skipped?")
        ids, updated = raw_events_mark_skipped(ids=ids, actor=request.user.get_username(), details={"via": "console"})
        if ids:
            LogEntry.objects.log_actions(
                cast(int, request.user.pk),  # a signed-in staff user
                RawEvent.objects.filter(pk__in=ids).only("pk", "event_type", "state"),
                CHANGE,
                change_message="Marked skipped (skipped:manual).",
            )
        self.message_user(request, f"Marked {updated} raw events skipped.", messages.SUCCESS)
        return None


def _request_id(request: HttpRequest) -> str | None:
    return getattr(request, "request_id", None)


def _is_id(value: str | None) -> TypeGuard[str]:
    return value is not None and value.isdigit() and len(value) < 19


_JOURNEY_LIMIT = 100


def raw_event_journey(raw_event: RawEvent) -> list[TraceEvent]:
    """The event's traces, webhook to worker, oldest first: by its id and by the request that
    delivered it (the webhook traces before the row existed); two index scans."""
    condition = Q(raw_event_id=raw_event.pk)
    if raw_event.request_id:
        condition |= Q(request_id=raw_event.request_id)
    rows = TraceEvent.objects.filter(condition).order_by("ts", "id")[:_JOURNEY_LIMIT]
    return list(rows)


# Traces ------------------------------------------------------------------------------------------


class LevelFilter(admin.SimpleListFilter):
    title = "level"
    parameter_name = "level"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(level, level) for level in LEVELS]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(level=self.value()) if self.value() else queryset


@admin.register(TraceEvent)
class TraceEventAdmin(ReadOnlyAdmin, NoCountAdmin):
    list_display = ("ts", "level", "event", "request_id", "user_id", "raw_event_id", "duration_ms", "message")
    list_filter = (LevelFilter, "ts")
    search_fields = ("=request_id", "=user_id")
    search_help_text = "An exact request id, user id, or raw event id."
    ordering = ("-ts",)
    list_per_page = 100

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        condition = Q(request_id=term) | Q(user_id=term)
        if term.isdigit() and len(term) < 19:
            condition |= Q(raw_event_id=int(term))
        return queryset.filter(condition), False


# Audit records -------------------------------------------------------------------------------------


@admin.register(AuditRecord)
class AuditRecordAdmin(ReadOnlyAdmin):
    list_display = ("at", "actor", "action", "raw_event_count", "request_id")
    list_filter = ("action", "at")
    search_fields = ("=actor", "=request_id")
    ordering = ("-at",)
    show_full_result_count = False


# Connections, users, lab uploads, imports (read-mostly) ------------------------------------------


@admin.register(TerraConnection)
class TerraConnectionAdmin(ReadOnlyAdmin):
    list_display = ("id", "user_id", "terra_user_id", "provider", "status", "connected_at", "last_webhook_at")
    list_filter = ("status", "provider", "connected_at")
    search_fields = ("=terra_user_id", "=user__id")
    raw_id_fields = ("user", "replaced_by")
    ordering = ("-id",)
    show_full_result_count = False


@admin.register(User)
class ApiUserAdmin(ReadOnlyAdmin):
    list_display = ("id", "email", "created_at")
    search_fields = ("=id", "=email")
    ordering = ("-created_at",)
    show_full_result_count = False


@admin.register(LabUpload)
class LabUploadAdmin(ReadOnlyAdmin):
    list_display = ("id", "user_id", "filename", "status", "size_bytes", "terra_upload_id", "created_at", "parsed_at")
    list_filter = ("status", "created_at")
    search_fields = ("=user__id", "=terra_upload_id")
    raw_id_fields = ("user",)
    ordering = ("-id",)
    show_full_result_count = False


@admin.register(ImportJob)
class ImportJobAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "user_id",
        "status",
        "format",
        "total",
        "accepted",
        "duplicates",
        "rejected",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "format", "created_at")
    search_fields = ("=user__id", "=request_id")
    raw_id_fields = ("user",)
    ordering = ("-id",)
    show_full_result_count = False
