"""Inviting people by email, revoking invitations, accepting them (unauthenticated)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from longtune.api.errors import ApiError
from longtune.tenancy import audit
from longtune.tenancy.models import (
    ApiKey,
    AuditAction,
    Invitation,
    InvitationStatus,
    Membership,
    Organization,
    User,
    normalize_email_address,
)
from longtune.tenancy.roles import Role, role_allows, role_at_least
from longtune.tenancy.services.api_keys import default_scopes_for_role, issue_api_key
from longtune.tenancy.services.errors import bad_request, conflict, forbidden
from longtune.tenancy.services.members import add_member
from longtune.tenancy.services.organizations import check_password_strength
from longtune.tenancy.tokens import generate_invitation_token, hash_secret


@transaction.atomic
def create_invitation(
    *,
    org: Organization,
    email: str,
    role: str,
    invited_by: User,
    actor_role: str,
    request: HttpRequest | None = None,
) -> tuple[Invitation, str]:
    """Returns the invitation and its token (shown once; deliver it to the invitee)."""
    email = normalize_email_address(email)
    if role == Role.OWNER and not role_allows(actor_role, "owners.manage"):
        raise forbidden("owner_protected", "Only owners can invite owners.", "role")
    if not role_at_least(actor_role, role):
        raise forbidden("role_exceeds_actor", f"A '{actor_role}' cannot invite a '{role}'.", "role")
    Organization.objects.select_for_update().get(pk=org.pk)  # one pending invitation per email
    if Membership.objects.for_org(org).filter(user__email=email).exists():
        raise conflict("already_member", f"{email} is already a member.", "email")
    pending = Invitation.objects.for_org(org).filter(
        email=email,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
        expires_at__gt=timezone.now(),
    )
    if pending.exists():
        raise conflict(
            "invitation_exists",
            f"{email} already has a pending invitation; revoke it first.",
            "email",
        )
    token = generate_invitation_token()
    invitation = Invitation.objects.create(
        org=org, email=email, role=role, token_hash=token.digest, invited_by=invited_by
    )
    audit.record(
        org=org,
        action=AuditAction.INVITATION_CREATED,
        target=invitation,
        request=request,
        metadata={"email": email, "role": role},
    )
    return invitation, token.secret


@transaction.atomic
def revoke_invitation(invitation: Invitation, *, request: HttpRequest | None = None) -> Invitation:
    locked = Invitation.objects.for_org(invitation.org).select_for_update().get(pk=invitation.pk)
    if locked.accepted_at is not None:
        raise conflict(
            "invitation_accepted", "An accepted invitation cannot be revoked; remove the member."
        )
    if locked.revoked_at is None:
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])
        audit.record(
            org=locked.org,
            action=AuditAction.INVITATION_REVOKED,
            target=locked,
            request=request,
            metadata={"email": locked.email},
        )
    return locked


@dataclass(frozen=True)
class AcceptedInvitation:
    membership: Membership
    api_key: ApiKey
    secret: str  # shown once


def _invalid_invitation() -> ApiError:
    # One answer for "no such token" and "token for another email": no probing for invitations.
    return ApiError(
        status=404,
        code="invalid_invitation",
        message="No pending invitation matches this token and email.",
    )


@transaction.atomic
def accept_invitation(
    *, token: str, email: str, password: str, name: str = "", request: HttpRequest | None = None
) -> AcceptedInvitation:
    email = normalize_email_address(email)
    invitation = (
        Invitation.objects.unscoped_across_orgs()  # the token decides the org
        .select_for_update()
        .filter(token_hash=hash_secret(token))
        .first()
    )
    if invitation is None or invitation.email != email:
        raise _invalid_invitation()
    status = invitation.status
    if status != InvitationStatus.PENDING:
        raise bad_request(f"invitation_{status}", f"This invitation is {status}.", "token")
    user = User.objects.filter(email=email).first()
    if user is None:
        check_password_strength(password, User(email=email))
        user = User.objects.create_user(email=email, password=password, name=name)
    elif not user.check_password(password):
        raise ApiError(
            status=401,
            code="invalid_credentials",
            message="Wrong password for the existing account.",
            param="password",
        )
    org = invitation.org
    if Membership.objects.for_org(org).filter(user=user).exists():
        raise conflict("already_member", f"{email} is already a member.", "email")
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    membership = add_member(
        org=org,
        user=user,
        role=invitation.role,
        cause=AuditAction.INVITATION_ACCEPTED,
        cause_target=invitation,
        request=request,
        metadata={"via": invitation.public_id},
    )
    key, secret = issue_api_key(
        org=org,
        created_by=user,
        role=membership.role,
        scopes=default_scopes_for_role(membership.role),
        name="default",
        request=request,
    )
    return AcceptedInvitation(membership=membership, api_key=key, secret=secret)
