"""Creating an organization with its first owner and first API key (signup, create_org)."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.http import HttpRequest
from django.utils.crypto import get_random_string
from django.utils.text import slugify

from longtune.tenancy.models import (
    ApiKey,
    AuditAction,
    Membership,
    Organization,
    Plan,
    User,
    normalize_email_address,
)
from longtune.tenancy.roles import Role
from longtune.tenancy.services.api_keys import issue_api_key
from longtune.tenancy.services.errors import bad_request, conflict
from longtune.tenancy.services.members import add_member

SLUG_MAX = 50


@dataclass(frozen=True)
class NewOrganization:
    user: User
    org: Organization
    membership: Membership
    api_key: ApiKey
    secret: str  # shown once


def unique_slug(name: str) -> str:
    base = slugify(name)[:SLUG_MAX].strip("-") or "org"
    slug = base
    while Organization.objects.filter(slug=slug).exists():
        slug = (
            f"{base[: SLUG_MAX - 7]}-{get_random_string(6, 'abcdefghijklmnopqrstuvwxyz0123456789')}"
        )
    return slug


def check_password_strength(password: str, user: User | None = None) -> None:
    try:
        validate_password(password, user)
    except DjangoValidationError as exc:
        raise bad_request("weak_password", " ".join(exc.messages), "password") from None


@transaction.atomic
def create_organization_with_owner(
    *,
    email: str,
    password: str,
    org_name: str,
    plan: str = Plan.FREE,
    existing_user_ok: bool = False,
    existing_user: User | None = None,
    request: HttpRequest | None = None,
) -> NewOrganization:
    """New org + owner membership + first owner key, all or nothing.

    ``existing_user_ok`` (the create_org command): an existing user may create another org if
    the password matches. ``existing_user``: the user is already authenticated (a confirmed
    signup link, ``services.signup``), no password is checked. Otherwise an existing email is
    refused (``email_taken``) — a caller that must not reveal registrations (the public
    signup) goes through ``services.signup`` instead.
    """
    email = normalize_email_address(email)
    user = existing_user or User.objects.filter(email=email).first()
    if existing_user is not None:
        pass
    elif user is not None:
        if not existing_user_ok:
            raise conflict("email_taken", "An account with this email already exists.", "email")
        if not user.check_password(password):
            raise bad_request(
                "invalid_credentials", "Wrong password for the existing user.", "password"
            )
    else:
        check_password_strength(password, User(email=email))
        user = User.objects.create_user(email=email, password=password)
    org = Organization.objects.create(name=org_name.strip(), slug=unique_slug(org_name), plan=plan)
    membership = add_member(
        org=org,
        user=user,
        role=Role.OWNER,
        cause=AuditAction.ORGANIZATION_CREATED,
        cause_target=org,
        request=request,
    )
    key, secret = issue_api_key(
        org=org, created_by=user, role=Role.OWNER, name="default", request=request
    )
    return NewOrganization(user=user, org=org, membership=membership, api_key=key, secret=secret)
