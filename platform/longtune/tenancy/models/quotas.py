"""Per-org quota overrides set by staff. Plan defaults live in code (tenancy.quotas)."""

from __future__ import annotations

from django.db import models

from longtune.tenancy.models.organizations import Organization
from longtune.tenancy.scoping import OrgOwnedModelMixin, OrgScopedManager


class OrgQuota(OrgOwnedModelMixin, models.Model):
    """One row per org at most; a NULL field means "the plan default"."""

    org = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="quota")
    max_concurrent_jobs = models.PositiveIntegerField(null=True, blank=True)
    monthly_training_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    storage_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    max_endpoints = models.PositiveIntegerField(null=True, blank=True)
    monthly_inference_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    note = models.CharField(max_length=500, blank=True, help_text="Why staff changed it.")
    updated_at = models.DateTimeField(auto_now=True)

    objects = OrgScopedManager()

    class Meta:
        verbose_name = "quota override"

    def __str__(self) -> str:
        return f"quota override for {self.org.slug}"
