"""Staff: register base models (local directory or s3://), look at fine-tuned models.

Fine-tuned models are created by finished jobs only (``catalog.services``), never by hand.
"""

from __future__ import annotations

from django.contrib import admin

from longtune.catalog.models import BaseModel, FineTunedModel
from longtune.tenancy.cross_org_admin import CrossOrgModelAdmin


@admin.register(BaseModel)
class BaseModelAdmin(CrossOrgModelAdmin):  # its org choices span every org
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


@admin.register(FineTunedModel)
class FineTunedModelAdmin(CrossOrgModelAdmin):
    list_display = ("name", "org", "base_model", "context_length", "created_at")
    search_fields = ("name", "org__slug")

    def has_add_permission(self, request) -> bool:
        return False
