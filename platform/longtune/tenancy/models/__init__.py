"""Tenancy models, one module per concept; import from here."""

from longtune.tenancy.models.api_keys import ApiKey
from longtune.tenancy.models.audit import AuditAction, AuditLogEntry, AuditLogIsAppendOnly
from longtune.tenancy.models.invitations import Invitation, InvitationStatus
from longtune.tenancy.models.organizations import Membership, Organization, Plan
from longtune.tenancy.models.quotas import OrgQuota
from longtune.tenancy.models.users import User, UserManager, normalize_email_address

__all__ = [
    "ApiKey",
    "AuditAction",
    "AuditLogEntry",
    "AuditLogIsAppendOnly",
    "Invitation",
    "InvitationStatus",
    "Membership",
    "OrgQuota",
    "Organization",
    "Plan",
    "User",
    "UserManager",
    "normalize_email_address",
]
