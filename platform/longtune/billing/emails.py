"""Budget alert emails: to the members who may manage billing, once per threshold per period.

Recipients are the members whose role holds ``billing.manage`` in the permission matrix
(``tenancy.roles``: owners today), so the email follows the matrix if a billing role is added.
Mail goes through ``settings.EMAIL_BACKEND`` after the alert's transaction commits: the alert
(its org event and the account's ``budget_alert_percent``) is the record, the email is a
notification of it, and a mail server that is down is logged, never retried into a duplicate.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from django.core.mail import send_mass_mail

from longtune.billing.conf import billing_conf
from longtune.tenancy.models import Membership, Organization
from longtune.tenancy.roles import PERMISSION_MATRIX

logger = logging.getLogger("longtune.billing")

BILLING_MANAGE = "billing.manage"


def billing_recipients(org: Organization) -> list[str]:
    """Emails of the org's active members whose role may manage billing (sorted, unique)."""
    roles = PERMISSION_MATRIX[BILLING_MANAGE][0]
    emails = (
        Membership.objects.for_org(org)
        .filter(role__in=roles, user__is_active=True)
        .values_list("user__email", flat=True)
    )
    return sorted({email for email in emails if email})


def billing_page_url(org: Organization) -> str:
    return f"{billing_conf().public_url.rstrip('/')}/o/{org.slug}/billing/"


def budget_alert_message(
    org: Organization, *, percent: int, usage: Decimal, budget: Decimal, hard_cap: bool, period: str
) -> tuple[str, str]:
    """(subject, body) of one alert."""
    subject = f"[LongTune] {org.name}: {percent}% of the {period} budget used"
    lines = [
        f"This month's usage for {org.name} is ${usage:.2f}, {percent}% of its "
        f"${budget:.2f} monthly budget ({period}, UTC).",
        "",
    ]
    if hard_cap and percent >= 100:
        lines.append(
            "The budget has a hard cap: new fine-tune jobs and endpoint starts are refused "
            "until the budget is raised or the month ends. Running work is not stopped."
        )
    elif hard_cap:
        lines.append("The budget has a hard cap: at 100% new billable work is refused.")
    else:
        lines.append("The budget has no hard cap: work continues and is billed.")
    lines += ["", f"Usage, budget and invoices: {billing_page_url(org)}", ""]
    return subject, "\n".join(lines)


def send_budget_alert_email(
    org: Organization, *, percent: int, usage: Decimal, budget: Decimal, hard_cap: bool, period: str
) -> int:
    """Send one alert to every billing recipient; returns how many were addressed."""
    recipients = billing_recipients(org)
    if not recipients:
        return 0
    subject, body = budget_alert_message(
        org, percent=percent, usage=usage, budget=budget, hard_cap=hard_cap, period=period
    )
    try:
        # One message per recipient: members do not see each other's addresses.
        send_mass_mail([(subject, body, None, [email]) for email in recipients])
    except Exception:  # the alert is recorded as an org event; the mail server is not ours
        logger.exception("budget alert email for %s (%s%%) failed", org.slug, percent)
        return 0
    return len(recipients)
