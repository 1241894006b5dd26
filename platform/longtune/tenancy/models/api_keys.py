"""API keys: ``lt_`` + 48 random base62 chars, shown once, stored as a SHA-256 digest.

See ``tenancy.tokens`` for why a fast hash is the right choice for high-entropy keys.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from longtune.api.ids import PublicIdField
from longtune.tenancy.models.organizations import Organization
from longtune.tenancy.roles import Role
from longtune.tenancy.scoping import OrgOwnedModelMixin, OrgScopedManager
from longtune.tenancy.tokens import redacted

# last_used_at is written at most this often per key: one UPDATE a minute instead of one
# per request (a busy key would otherwise turn every GET into a write).
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKey(OrgOwnedModelMixin, models.Model):
    public_id = PublicIdField(prefix="key_")
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200, blank=True)
    role = models.CharField(max_length=10, choices=Role.choices)
    scopes = models.JSONField(default=list, help_text='Subset of ["read", "write", "inference"].')
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    last_four = models.CharField(max_length=4, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="api_keys"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = OrgScopedManager()

    class Meta:
        ordering = ["pk"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name or self.public_id} ({self.redacted_value})"

    @property
    def redacted_value(self) -> str:
        return redacted(self.last_four)

    def is_expired(self, now=None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    def touch_last_used(self, now=None) -> None:
        """Record use, at most once per LAST_USED_RESOLUTION, with one conditional UPDATE."""
        now = now or timezone.now()
        if self.last_used_at is not None and now - self.last_used_at < LAST_USED_RESOLUTION:
            return
        stale = models.Q(last_used_at__isnull=True) | models.Q(
            last_used_at__lt=now - LAST_USED_RESOLUTION
        )
        ApiKey.objects.for_org(self.org).filter(stale, pk=self.pk).update(last_used_at=now)
        self.last_used_at = now
