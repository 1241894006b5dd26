"""Signup that does not tell anyone whether an email already has an account.

``request_signup`` answers the same for every well-formed request and explains by email:

- a new address gets a confirmation link; the account is held as an inactive user (it cannot
  log in, gets no password-reset mail) until the link is used, and ``confirm_signup`` then
  creates the organization, its owner membership and first API key (returned once);
- an address that already has an account gets a mail saying so, with the log-in and
  password-reset links; nothing changes.

A second signup for a still-pending address replaces its password and organization name (the
mailbox owner confirms whichever link they use last). The link is ``django.core.signing`` over
the pending user's public id and email, valid ``SIGNUP_CONFIRM_MAX_AGE_SECONDS``, and works once:
confirming activates the user, after which the same token is refused.
"""

from __future__ import annotations

from django.core import signing
from django.core.mail import send_mail
from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from longtune.api.errors import ApiError
from longtune.tenancy.models import User, normalize_email_address
from longtune.tenancy.services.organizations import (
    NewOrganization,
    check_password_strength,
    create_organization_with_owner,
)

SALT = "longtune.tenancy.signup"
SIGNUP_CONFIRM_MAX_AGE_SECONDS = 3 * 24 * 3600
ANSWER = (
    "Check your inbox: we sent a message to this address explaining the next step "
    "(a confirmation link, or how to log in if it already has an account)."
)


PASSWORD_RESET_ANSWER = (
    "If this address has an account, we sent it a link to choose a new password."
)


def send_password_reset(email: str, *, request: HttpRequest) -> None:
    """Django's PasswordResetForm (signed single-use token; mails active users only, nothing
    otherwise), with the dashboard's templates: the same mail as the dashboard's form."""
    from django.contrib.auth.forms import PasswordResetForm

    form = PasswordResetForm(data={"email": email})
    if form.is_valid():
        form.save(
            request=request,
            use_https=request.is_secure(),
            email_template_name="dashboard/password_reset_email.txt",
            subject_template_name="dashboard/password_reset_subject.txt",
        )


def is_pending(user: User) -> bool:
    """An account waiting for its signup link (never active, never logged in, no org)."""
    return (
        not user.is_active
        and user.email_verified_at is None
        and user.last_login is None
        and not user.memberships.exists()
    )


def make_token(user: User, org_name: str) -> str:
    return signing.dumps({"u": user.public_id, "e": user.email, "o": org_name}, salt=SALT)


@transaction.atomic
def request_signup(
    *, email: str, password: str, org_name: str, request: HttpRequest | None = None
) -> None:
    """Validate, then mail the next step. Same outcome (None) whether or not the email is
    registered; only the mail differs."""
    email = normalize_email_address(email)
    check_password_strength(password, User(email=email))
    user = User.objects.select_for_update().filter(email=email).first()
    if user is not None and not is_pending(user):
        _send(
            email,
            "You already have a LongTune account",
            "Someone (maybe you) tried to sign up with this address, which already has an "
            f"account. Log in at {_link(request, 'dashboard:login')} or reset your password at "
            f"{_link(request, 'dashboard:password_reset')}. If it was not you, ignore this mail.",
        )
        return
    if user is None:
        user = User.objects.create_user(email=email, password=password, is_active=False)
    else:
        user.set_password(password)
        user.save(update_fields=["password"])
    token = make_token(user, org_name.strip())
    _send(
        email,
        "Confirm your LongTune signup",
        f"Confirm the signup of {org_name.strip()!r} for {email}: "
        f"{_link(request, 'dashboard:signup_confirm', token)}\n\n"
        f"Or through the API: POST /v1/auth/signup/confirm with "
        f'{{"token": "{token}"}}\n\nThe link works for 3 days, once.',
    )


@transaction.atomic
def confirm_signup(*, token: str, request: HttpRequest | None = None) -> NewOrganization:
    """The signup link: activate the pending user and create the org (404
    ``invalid_signup_token`` for a forged, expired or used link)."""
    try:
        data = signing.loads(token, salt=SALT, max_age=SIGNUP_CONFIRM_MAX_AGE_SECONDS)
    except signing.BadSignature:  # includes SignatureExpired
        data = None
    user = (
        User.objects.select_for_update()
        .filter(public_id=data.get("u"), email=data.get("e"))
        .first()
        if isinstance(data, dict)
        else None
    )
    if user is None or not is_pending(user):
        # 404, as an unknown invitation token: no pending signup matches it.
        raise ApiError(
            status=404,
            code="invalid_signup_token",
            message="No pending signup matches this link: it is invalid, expired or used.",
            param="token",
        )
    user.is_active = True
    user.email_verified_at = timezone.now()  # the link reached this mailbox
    user.save(update_fields=["is_active", "email_verified_at"])
    return create_organization_with_owner(
        email=user.email,
        password="",
        org_name=data.get("o") or "My organization",
        existing_user=user,
        request=request,
    )


def _link(request: HttpRequest | None, name: str, *args: str) -> str:
    path = reverse(name, args=args)
    return request.build_absolute_uri(path) if request is not None else path


def _send(email: str, subject: str, body: str) -> None:
    send_mail(subject=subject, message=body, from_email=None, recipient_list=[email])
