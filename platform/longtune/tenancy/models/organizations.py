"""Organizations (tenants) and who belongs to them with which role."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from longtune.api.ids import PublicIdField
from longtune.tenancy.roles import Role
from longtune.tenancy.scoping import OrgOwnedModelMixin, OrgScopedManager


class Plan(models.TextChoices):
    FREE = "free", "Free"
    PRO = "pro", "Pro"
    ENTERPRISE = "enterprise", "Enterprise"


class Organization(models.Model):
    """A tenant. Every org-owned row points here; quotas and throttling are per organization."""

    public_id = PublicIdField(prefix="org_")
    name = models.CharField(max_length=200)
    slug = models.SlugField(
        max_length=60, unique=True, help_text="Also names its dedicated GPU queue."
    )
    plan = models.CharField(max_length=20, choices=Plan.choices, default=Plan.FREE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"


class Membership(OrgOwnedModelMixin, models.Model):
    public_id = PublicIdField(prefix="mem_")
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = OrgScopedManager()

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(fields=["org", "user"], name="one_membership_per_org_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.org.slug} as {self.role}"
