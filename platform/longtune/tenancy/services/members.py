"""Role changes and removals, with the owner rules:

- an organization always keeps at least one owner (``last_owner``);
- only owners touch owners or grant the owner role (``owner_protected``);
- nobody grants a role above their own.
The org row is locked (select_for_update) so two owners demoting each other concurrently
cannot leave the org ownerless.
"""

from __future__ import annotations

from typing import Any

from django.db import models, transaction
from django.http import HttpRequest

from longtune.tenancy import audit
from longtune.tenancy.models import ApiKey, AuditAction, Membership, Organization, User
from longtune.tenancy.roles import Role, role_allows, role_at_least
from longtune.tenancy.services.api_keys import clamp_keys_to_role, revoke_api_key
from longtune.tenancy.services.errors import conflict, forbidden


def add_member(
    *,
    org: Organization,
    user: User,
    role: str,
    cause: str,
    cause_target: models.Model,
    request: HttpRequest | None = None,
    metadata: dict[str, Any] | None = None,
) -> Membership:
    """The one way a person joins an org: the membership, then two audit entries — what made
    it happen (``cause``: the org was created, an invitation was accepted) and
    ``member.added`` (email, role, plus ``metadata``), both acted by the new member."""
    membership = Membership.objects.create(org=org, user=user, role=role)
    audit.record(org=org, action=cause, target=cause_target, actor_user=user, request=request)
    audit.record(
        org=org,
        action=AuditAction.MEMBER_ADDED,
        target=membership,
        actor_user=user,
        request=request,
        metadata={"email": user.email, "role": role} | (metadata or {}),
    )
    return membership


def _lock(membership: Membership) -> Membership:
    org = Organization.objects.select_for_update().get(pk=membership.org_id)
    return (
        Membership.objects.for_org(org)
        .select_for_update()
        .select_related("org", "user")
        .get(pk=membership.pk)
    )


def _owner_count(org: Organization) -> int:
    return Membership.objects.for_org(org).filter(role=Role.OWNER).count()


def _check_may_touch(target: Membership, *, actor_role: str, new_role: str | None = None) -> None:
    touches_owner = target.role == Role.OWNER or new_role == Role.OWNER
    if touches_owner and not role_allows(actor_role, "owners.manage"):
        raise forbidden(
            "owner_protected", "Only owners can change or remove an owner, or grant the owner role."
        )
    if new_role is not None and not role_at_least(actor_role, new_role):
        raise forbidden(
            "role_exceeds_actor", f"A '{actor_role}' cannot grant the '{new_role}' role.", "role"
        )


def _check_not_last_owner(target: Membership) -> None:
    if target.role == Role.OWNER and _owner_count(target.org) <= 1:
        raise conflict("last_owner", "The organization must keep at least one owner.")


@transaction.atomic
def change_role(
    membership: Membership, new_role: str, *, actor_role: str, request: HttpRequest | None = None
) -> Membership:
    target = _lock(membership)
    _check_may_touch(target, actor_role=actor_role, new_role=new_role)
    if new_role == target.role:
        return target
    if new_role != Role.OWNER:
        _check_not_last_owner(target)
    old_role = target.role
    target.role = new_role
    target.save(update_fields=["role", "updated_at"])
    clamped = clamp_keys_to_role(org=target.org, user=target.user, role=new_role)
    audit.record(
        org=target.org,
        action=AuditAction.MEMBER_ROLE_CHANGED,
        target=target,
        request=request,
        metadata={
            "email": target.user.email,
            "from": old_role,
            "to": new_role,
            "keys_clamped": clamped,
        },
    )
    return target


@transaction.atomic
def remove_member(
    membership: Membership, *, actor_role: str, request: HttpRequest | None = None
) -> None:
    """Delete the membership and revoke every key the user created in this org."""
    target = _lock(membership)
    _check_may_touch(target, actor_role=actor_role)
    _check_not_last_owner(target)
    keys = ApiKey.objects.for_org(target.org).filter(
        created_by=target.user, revoked_at__isnull=True
    )
    for key in keys:
        revoke_api_key(key, request=request, reason="member_removed")
    audit.record(
        org=target.org,
        action=AuditAction.MEMBER_REMOVED,
        target=target,
        request=request,
        metadata={"email": target.user.email, "role": target.role},
    )
    target.delete()
