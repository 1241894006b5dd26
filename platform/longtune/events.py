"""What every org-scoped event log shares: fine-tuning job events and endpoint events.

Both are append-only rows of (org, level, message, JSON data, time) that the API lists per
owner. Only the owner foreign key (``job`` / ``endpoint``), the public-id prefix and the index
on (owner, id) differ, so those stay in the concrete models. ``OrgEvent`` is abstract: it has
no table and no migration of its own, and lives outside any app so both apps can import it.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from longtune.tenancy.models import Organization
from longtune.tenancy.scoping import OrgOwnedModelMixin, OrgScopedManager

MESSAGE_MAX_LENGTH = 2000


class EventLevel(models.TextChoices):
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class OrgEvent(OrgOwnedModelMixin, models.Model):
    """One event of an org-owned object. Subclasses add the owner FK and ``public_id``."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    level = models.CharField(max_length=10, default=EventLevel.INFO)  # an EventLevel value
    message = models.CharField(max_length=MESSAGE_MAX_LENGTH)
    data = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgScopedManager()

    class Meta:
        abstract = True
        ordering = ["pk"]

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Clip the message to the column: messages quote worker errors of any length, and an
        event that fails to insert (PostgreSQL rejects the overlong value) would roll back the
        state change it was recording."""
        self.message = self.message[:MESSAGE_MAX_LENGTH]
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return f"[{self.level}] {self.message}"
