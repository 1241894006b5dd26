"""The org's billing account and its Stripe customer, created on first need.

``account_for(org)`` makes the row (billing off or on: budgets live on it). ``ensure_customer``
creates the Stripe customer the first time something needs one (checkout, the portal, the
outbox sending the org's first meter event) and stores its id; the org's public id is the
customer's metadata and the request's idempotency key, so two racing callers create one
customer in Stripe, not two.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from longtune.billing.models import BillingAccount, BillingEvent
from longtune.billing.stripe_api import stripe_client
from longtune.events import EventLevel
from longtune.tenancy import audit
from longtune.tenancy.models import Organization


def account_for(org: Organization) -> BillingAccount:
    accounts = BillingAccount.objects.for_org(org)
    account = accounts.filter(org=org).first()
    if account is not None:
        return account
    try:
        with transaction.atomic():
            return BillingAccount.objects.create(org=org)
    except IntegrityError:  # a concurrent first caller made it
        return accounts.get(org=org)


def locked_account(org: Organization) -> BillingAccount:
    """The row under ``select_for_update`` (call inside a transaction)."""
    account_for(org)
    return BillingAccount.objects.for_org(org).select_for_update().get(org=org)


def ensure_customer(org: Organization) -> str:
    account = account_for(org)
    if account.stripe_customer_id:
        return account.stripe_customer_id
    customer = stripe_client().v1.customers.create(
        params={"name": org.name, "metadata": {"org_id": org.public_id, "org_slug": org.slug}},
        options={"idempotency_key": f"customer-{org.public_id}"},
    )
    BillingAccount.objects.for_org(org).filter(pk=account.pk, stripe_customer_id="").update(
        stripe_customer_id=customer.id
    )
    return BillingAccount.objects.for_org(org).get(pk=account.pk).stripe_customer_id


def org_for_customer(customer_id: str) -> Organization | None:
    account = (
        BillingAccount.objects.unscoped_across_orgs()
        .select_related("org")
        .filter(stripe_customer_id=customer_id)
        .first()
    )
    return account.org if account is not None else None


def note(
    org: Organization,
    kind: str,
    message: str,
    *,
    action: str | None = None,
    level: str = EventLevel.INFO,
    data: dict[str, Any] | None = None,
    request: Any = None,
) -> None:
    """An org event, and (for a state change) the audit entry: every transition leaves both."""
    BillingEvent.objects.create(org=org, kind=kind, level=level, message=message, data=data)
    if action is not None:
        account = account_for(org)
        audit.record(org=org, action=action, target=account, request=request, metadata=data)


_UNSET: Any = object()


def set_budget(
    org: Organization, *, monthly_budget: Any = _UNSET, hard_cap: Any = _UNSET, request: Any = None
) -> BillingAccount:
    """Set the monthly budget (Decimal dollars or None) and/or the hard cap; audited. A new
    budget re-arms this period's alerts."""
    from longtune.tenancy.models import AuditAction

    with transaction.atomic():
        account = locked_account(org)
        if monthly_budget is not _UNSET:
            account.monthly_budget_cents = (
                None if monthly_budget is None else int(monthly_budget * 100)
            )
            account.budget_alert_percent = 0
        if hard_cap is not _UNSET:
            account.hard_cap = bool(hard_cap)
        account.save()
        note(
            org,
            "budget",
            "Monthly budget set to "
            + (
                "none"
                if account.monthly_budget_cents is None
                else f"${account.monthly_budget_cents / 100:.2f}"
            )
            + (" with a hard cap." if account.hard_cap else "."),
            action=AuditAction.BILLING_BUDGET_CHANGED,
            data={"budget_cents": account.monthly_budget_cents, "hard_cap": account.hard_cap},
            request=request,
        )
    return account
