"""Invitations: an admin invites an email address with a role; the token is shown once."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from longtune.api.ids import PublicIdField
from longtune.tenancy.models.organizations import Organization
from longtune.tenancy.roles import Role
from longtune.tenancy.scoping import OrgOwnedModelMixin, OrgScopedManager

INVITATION_LIFETIME = timedelta(days=7)


class InvitationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    ACCEPTED = "accepted", "Accepted"
    REVOKED = "revoked", "Revoked"
    EXPIRED = "expired", "Expired"  # derived from expires_at; never stored


def default_expiry():
    return timezone.now() + INVITATION_LIFETIME


class Invitation(OrgOwnedModelMixin, models.Model):
    public_id = PublicIdField(prefix="inv_")
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="invitations_sent"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(default=default_expiry)
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="invitations_accepted",
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = OrgScopedManager()

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.email} -> {self.org.slug} ({self.status})"

    @property
    def status(self) -> str:
        if self.accepted_at:
            return InvitationStatus.ACCEPTED
        if self.revoked_at:
            return InvitationStatus.REVOKED
        if self.expires_at <= timezone.now():
            return InvitationStatus.EXPIRED
        return InvitationStatus.PENDING
