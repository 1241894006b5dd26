"""Email verification: a signed, time-limited link mailed at sign-up (and on request).

The token is ``django.core.signing`` over the user's public id AND email, so it stops working
if the email changes; nothing is stored until the link is opened, which sets
``User.email_verified_at``. Mail goes through settings.EMAIL_BACKEND (console by default,
SMTP from the environment).
"""

from __future__ import annotations

from django.core import signing
from django.core.mail import send_mail
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from longtune.tenancy.models import User

SALT = "longtune.dashboard.email-verification"
MAX_AGE_SECONDS = 3 * 24 * 3600


def make_token(user: User) -> str:
    return signing.dumps({"u": user.public_id, "e": user.email}, salt=SALT, compress=True)


def user_for_token(token: str) -> User | None:
    """The user the link was made for, if it is genuine, fresh and the email unchanged."""
    try:
        data = signing.loads(token, salt=SALT, max_age=MAX_AGE_SECONDS)
    except signing.BadSignature:  # includes SignatureExpired
        return None
    return User.objects.filter(public_id=data.get("u"), email=data.get("e")).first()


def mark_verified(user: User) -> None:
    if user.email_verified_at is None:
        user.email_verified_at = timezone.now()
        user.save(update_fields=["email_verified_at"])


def send_verification_email(request: HttpRequest, user: User) -> None:
    link = request.build_absolute_uri(reverse("dashboard:verify_email", args=[make_token(user)]))
    send_mail(
        subject="Confirm your email for LongTune",
        message=f"Confirm that {user.email} is yours: {link}\n\nThe link works for 3 days.\n",
        from_email=None,
        recipient_list=[user.email],
        fail_silently=True,  # the banner offers to resend
    )
