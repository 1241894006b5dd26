"""Dunning and spend alerts: the account's state machine and the periodic sweep.

    active ──invoice.payment_failed / payment_action_required──> past_due (grace_until set)
    past_due ──grace over (sweep)──> suspended (running endpoints stopped, new work 402)
    past_due | suspended ──invoice.paid──> active

Nothing is deleted at any step; every transition is an org event and an audit entry. The
sweep (``compute.tasks.BILLING_DUNNING_SWEEP``, beat) also sends the budget alerts at 50, 80
and 100% of the monthly budget, once each per period (an org event and an email,
``emails.py``).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from longtune.billing.accounts import account_for, locked_account, note
from longtune.billing.conf import billing_conf
from longtune.billing.emails import send_budget_alert_email
from longtune.billing.models import BillingAccount, BillingState
from longtune.billing.usage import period_summary
from longtune.events import EventLevel
from longtune.tenancy.models import AuditAction, Organization

logger = logging.getLogger("longtune.billing")

BUDGET_ALERT_PERCENTS = (50, 80, 100)


def payment_failed(
    org: Organization, *, invoice_id: str = "", reason: str = "payment_failed"
) -> bool:
    """active -> past_due with a grace period; True when the state changed."""
    with transaction.atomic():
        account = locked_account(org)
        if account.state != BillingState.ACTIVE:
            return False
        grace_until = timezone.now() + timedelta(seconds=billing_conf().grace_period_seconds)
        account.state = BillingState.PAST_DUE
        account.grace_until = grace_until
        account.save(update_fields=["state", "grace_until", "updated_at"])
        note(
            org,
            "past_due",
            f"Payment failed ({reason}); billing is past due. New work is refused after "
            f"{grace_until:%Y-%m-%d %H:%M} UTC unless the invoice is paid.",
            action=AuditAction.BILLING_PAST_DUE,
            level=EventLevel.WARN,
            data={"invoice": invoice_id, "reason": reason, "grace_until": grace_until.isoformat()},
        )
    return True


def payment_succeeded(org: Organization, *, invoice_id: str = "") -> bool:
    """past_due | suspended -> active; True when the state changed."""
    with transaction.atomic():
        account = locked_account(org)
        if account.state == BillingState.ACTIVE:
            return False
        previous = account.state
        account.state = BillingState.ACTIVE
        account.grace_until = None
        account.save(update_fields=["state", "grace_until", "updated_at"])
        note(
            org,
            "restored",
            f"Invoice paid; billing is active again (was {previous}).",
            action=AuditAction.BILLING_RESTORED,
            data={"invoice": invoice_id, "previous": previous},
        )
    return True


def suspend(org: Organization) -> bool:
    """past_due -> suspended and stop the org's running endpoints; True when it changed."""
    from longtune.inference.models import ACTIVE_ENDPOINT_STATUSES, Endpoint
    from longtune.inference.services import stop_endpoint

    with transaction.atomic():
        account = locked_account(org)
        if account.state != BillingState.PAST_DUE:
            return False
        account.state = BillingState.SUSPENDED
        account.save(update_fields=["state", "updated_at"])
        running = list(
            Endpoint.objects.for_org(org).filter(
                status__in=ACTIVE_ENDPOINT_STATUSES, stop_requested=False, deleted_at__isnull=True
            )
        )
        for endpoint in running:
            stop_endpoint(endpoint, reason="Stopped: billing suspended after a failed payment.")
        note(
            org,
            "suspended",
            f"Grace period over without payment: billing suspended, {len(running)} endpoint(s) "
            "stopped; new fine-tune jobs and endpoint starts are refused until the invoice is paid.",
            action=AuditAction.BILLING_SUSPENDED,
            level=EventLevel.ERROR,
            data={"stopped_endpoints": [e.public_id for e in running]},
        )
    return True


def send_budget_alerts(account: BillingAccount) -> int | None:
    """The highest threshold newly crossed this period, or None. Each threshold is sent at
    most once per period (checked and recorded under the account's row lock, so two sweeps
    racing send one alert): an org event, then, once committed, an email to the members who
    may manage billing. Crossing several thresholds at once sends one alert, the highest."""
    if not account.monthly_budget_cents:
        return None
    org = account.org
    with transaction.atomic():
        account = locked_account(org)
        if not account.monthly_budget_cents:
            return None
        summary = period_summary(org, account)
        period = f"{summary.start:%Y-%m}"
        already = account.budget_alert_percent if account.budget_alert_period == period else 0
        used = summary.budget_used_percent or 0
        crossed = [p for p in BUDGET_ALERT_PERCENTS if already < p <= used]
        if not crossed:
            return None
        percent = crossed[-1]
        account.budget_alert_period, account.budget_alert_percent = period, percent
        account.save(update_fields=["budget_alert_period", "budget_alert_percent", "updated_at"])
        note(
            org,
            "budget_alert",
            f"This month's usage (${summary.cost.usage_total:.2f}) has reached {percent}% of "
            f"the ${summary.budget:.2f} budget"
            + (" (hard cap: new work is refused)." if account.hard_cap and percent >= 100 else "."),
            level=EventLevel.WARN if percent >= 80 else EventLevel.INFO,
            data={"percent": percent, "usage": str(summary.cost.usage_total), "period": period},
        )
        alert = {
            "percent": percent,
            "usage": summary.cost.usage_total,
            "budget": summary.budget,
            "hard_cap": account.hard_cap,
            "period": period,
        }
        transaction.on_commit(lambda: send_budget_alert_email(org, **alert))
    return percent


def sweep() -> dict[str, list[str]]:
    """Suspend accounts whose grace ended; send due budget alerts."""
    now = timezone.now()
    expired = (
        BillingAccount.objects.unscoped_across_orgs()
        .select_related("org")
        .filter(state=BillingState.PAST_DUE, grace_until__lte=now)
    )
    suspended = [a.org.public_id for a in expired if suspend(a.org)]
    budgeted = (
        BillingAccount.objects.unscoped_across_orgs()
        .select_related("org")
        .filter(monthly_budget_cents__isnull=False)
    )
    alerted = [a.org.public_id for a in budgeted if send_budget_alerts(a) is not None]
    return {"suspended": suspended, "alerted": alerted}


__all__ = ["account_for", "payment_failed", "payment_succeeded", "suspend", "sweep"]
