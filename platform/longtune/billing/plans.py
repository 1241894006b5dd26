"""Changing an org's plan (from a Stripe subscription or a staff override): quota defaults
follow, because ``tenancy.quotas.effective_quota`` reads ``org.plan``."""

from __future__ import annotations

from typing import Any

from longtune.billing.accounts import note
from longtune.billing.conf import billing_conf
from longtune.tenancy.models import AuditAction, Organization, Plan


def plan_for_price(price_id: str) -> str | None:
    """The plan whose subscription price is ``price_id`` (STRIPE_PRICE_PRO/ENTERPRISE)."""
    for plan in (Plan.PRO, Plan.ENTERPRISE):
        if price_id and billing_conf().price_ids.get(plan) == price_id:
            return plan
    return None


def set_plan(org: Organization, plan: str, *, reason: str, request: Any = None) -> bool:
    if plan not in Plan.values:
        raise ValueError(f"unknown plan {plan!r}")
    previous = Organization.objects.get(pk=org.pk).plan
    if previous == plan:
        return False
    Organization.objects.filter(pk=org.pk).update(plan=plan)
    org.plan = plan
    note(
        org,
        "plan_changed",
        f"Plan changed from {previous} to {plan} ({reason}).",
        action=AuditAction.BILLING_PLAN_CHANGED,
        data={"from": previous, "to": plan, "reason": reason},
        request=request,
    )
    return True
