"""Staff: inspect evaluation jobs (read-only; they change state through the API and workers)."""

from __future__ import annotations

from django.contrib import admin

from longtune.evaluation.models import EvaluationGate, EvaluationJob
from longtune.tenancy.cross_org_admin import CrossOrgModelAdmin


@admin.register(EvaluationJob)
class EvaluationJobAdmin(CrossOrgModelAdmin):
    list_display = ("public_id", "org", "model", "suite", "status", "attempts", "created_at")
    list_filter = ("suite", "status")
    search_fields = ("public_id", "org__slug", "model")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(EvaluationGate)
class EvaluationGateAdmin(CrossOrgModelAdmin):
    list_display = ("org", "min_passkey_accuracy", "updated_at")
    search_fields = ("org__slug",)
