"""Staff: inspect jobs (base models: catalog.admin; dedicated capacity: compute.admin)."""

from __future__ import annotations

from django.contrib import admin

from longtune.finetuning.models import FineTuningJob, JobEvent
from longtune.tenancy.cross_org_admin import CrossOrgAdminMixin, CrossOrgModelAdmin


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
