"""Django admin for staff: files are read-only records; PII policies are editable.

Cross-org by nature: CrossOrgModelAdmin reads through unscoped_across_orgs(). Raw bytes and scrubbed
content never appear here, only metadata and the report (which holds masked samples only).
"""

from __future__ import annotations

from django.contrib import admin

from longtune.datasets.models import File, OrgPiiPolicy
from longtune.tenancy.cross_org_admin import CrossOrgModelAdmin


@admin.register(File)
class FileAdmin(CrossOrgModelAdmin):
    list_display = [
        "public_id",
        "org",
        "filename",
        "status",
        "format",
        "num_examples",
        "created_at",
    ]
    list_filter = ["status", "purpose", "format"]
    search_fields = ["public_id", "filename", "org__slug"]
    readonly_fields = [f.name for f in File._meta.fields]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("org")

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # files arrive through the API, which scrubs them

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(OrgPiiPolicy)
class OrgPiiPolicyAdmin(CrossOrgModelAdmin):
    """Validated by OrgPiiPolicy.clean(): unknown entity types and bad regexes are refused."""

    list_display = ["org", "updated_at"]
    search_fields = ["org__slug", "org__name"]
    raw_id_fields = ["org"]
    readonly_fields = ["updated_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("org")
