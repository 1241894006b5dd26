"""Staff: give an org dedicated capacity (the queue its own machines consume)."""

from __future__ import annotations

from django.contrib import admin

from longtune.compute.models import DedicatedCapacity
from longtune.tenancy.cross_org_admin import CrossOrgModelAdmin


@admin.register(DedicatedCapacity)
class DedicatedCapacityAdmin(CrossOrgModelAdmin):
    list_display = ("org", "hosts", "queue", "active", "hold_while_inactive", "created_at")
    list_filter = ("hosts", "active")
    search_fields = ("org__slug", "org__name", "queue")
    autocomplete_fields = ("org",)

    def get_queryset(self, request):
        return DedicatedCapacity.objects.unscoped_across_orgs().select_related("org")
