"""Append-only audit log.

Rows can be inserted, never changed or removed through the ORM: ``save()`` on an existing row,
``delete()``, and queryset ``update()``/``delete()`` raise ``AuditLogIsAppendOnly``. The
foreign keys PROTECT, so deleting an organization, user or key that appears in the log fails
too (deactivate/revoke instead). Write entries with ``tenancy.audit.record``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from longtune.api.ids import PublicIdField
from longtune.tenancy.models.api_keys import ApiKey
from longtune.tenancy.models.organizations import Organization
from longtune.tenancy.scoping import OrgOwnedModelMixin, OrgScopedQuerySet, org_scoped_manager


class AuditLogIsAppendOnly(Exception):
    pass


class AuditAction(models.TextChoices):
    ORGANIZATION_CREATED = "organization.created"
    API_KEY_CREATED = "api_key.created"
    API_KEY_REVOKED = "api_key.revoked"
    MEMBER_ADDED = "member.added"
    MEMBER_REMOVED = "member.removed"
    MEMBER_ROLE_CHANGED = "member.role_changed"
    INVITATION_CREATED = "invitation.created"
    INVITATION_ACCEPTED = "invitation.accepted"
    INVITATION_REVOKED = "invitation.revoked"
    QUOTA_CHANGED = "quota.changed"
    FILE_UPLOADED = "file.uploaded"
    FILE_SCRUBBED = "file.scrubbed"
    FILE_REJECTED = "file.rejected"
    FILE_DELETED = "file.deleted"
    PII_POLICY_CHANGED = "pii_policy.changed"
    EVALUATION_GATE_CHANGED = "evaluation_gate.changed"
    MODEL_DELETED = "model.deleted"
    DEDICATED_INSTANCE_REQUESTED = "dedicated_instance.requested"
    DEDICATED_INSTANCE_PROVISIONED = "dedicated_instance.provisioned"
    DEDICATED_INSTANCE_READY = "dedicated_instance.ready"
    DEDICATED_INSTANCE_RESIZED = "dedicated_instance.resized"
    DEDICATED_INSTANCE_DRAINING = "dedicated_instance.draining"
    DEDICATED_INSTANCE_DECOMMISSIONED = "dedicated_instance.decommissioned"
    DEDICATED_INSTANCE_FAILED = "dedicated_instance.failed"
    DEDICATED_INSTANCE_CONTRACT_EXTENDED = "dedicated_instance.contract_extended"
    BILLING_PLAN_CHANGED = "billing.plan_changed"
    BILLING_SUBSCRIPTION_CHANGED = "billing.subscription_changed"
    BILLING_PAST_DUE = "billing.past_due"
    BILLING_SUSPENDED = "billing.suspended"
    BILLING_RESTORED = "billing.restored"
    BILLING_BUDGET_CHANGED = "billing.budget_changed"
    BILLING_CREDIT_GRANTED = "billing.credit_granted"


class AppendOnlyQuerySet(OrgScopedQuerySet):
    def update(self, **kwargs: Any) -> int:
        raise AuditLogIsAppendOnly("audit log entries cannot be updated")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AuditLogIsAppendOnly("audit log entries cannot be deleted")

    def bulk_update(self, *args: Any, **kwargs: Any) -> int:
        raise AuditLogIsAppendOnly("audit log entries cannot be updated")


class AuditLogEntry(OrgOwnedModelMixin, models.Model):
    public_id = PublicIdField(prefix="audit_")
    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="audit_log")
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    actor_api_key = models.ForeignKey(
        ApiKey, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    action = models.CharField(max_length=64, choices=AuditAction.choices, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = org_scoped_manager(AppendOnlyQuerySet)

    class Meta:
        ordering = ["pk"]
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"

    def __str__(self) -> str:
        return f"{self.action} {self.target_type}:{self.target_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None or not self._state.adding:
            raise AuditLogIsAppendOnly("audit log entries cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AuditLogIsAppendOnly("audit log entries cannot be deleted")
