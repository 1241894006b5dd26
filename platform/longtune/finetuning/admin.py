"""Staff: register base models, route orgs to dedicated GPU queues, inspect jobs."""

from __future__ import annotations

from django.contrib import admin

from longtune.finetuning.models import (
    BaseModel,
    FineTunedModel,
    FineTuningJob,
    JobEvent,
    OrgFinetuningSettings,
)
from longtune.tenancy.cross_org_admin import CrossOrgAdminMixin, CrossOrgModelAdmin


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "location",
        "original_context_length",
        "max_context_length",
        "is_public",
        "org",
    )
    list_filter = ("is_public",)
    search_fields = ("name", "location")


@admin.register(OrgFinetuningSettings)
class OrgFinetuningSettingsAdmin(CrossOrgModelAdmin):
    list_display = ("org", "dedicated_queue")
    search_fields = ("org__slug", "org__name")
    autocomplete_fields = ("org",)


class JobEventInline(CrossOrgAdminMixin, admin.TabularInline):
    model = JobEvent
    fields = ("created_at", "level", "type", "message")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-pk",)

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(FineTuningJob)
class FineTuningJobAdmin(CrossOrgModelAdmin):
    """Read-only: jobs change state through the API and workers, never by hand."""

    list_display = ("public_id", "org", "model_name", "status", "attempts", "created_at")
    list_filter = ("status",)
    search_fields = ("public_id", "org__slug", "fine_tuned_model")
    inlines = (JobEventInline,)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("org")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(FineTunedModel)
class FineTunedModelAdmin(CrossOrgModelAdmin):
    list_display = ("name", "org", "base_model", "context_length", "created_at")
    search_fields = ("name", "org__slug")

    def has_add_permission(self, request) -> bool:
        return False
