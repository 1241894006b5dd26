"""Factories for the generated tenant-isolation tests: a billing account planted in org A
must never show up in org B's responses."""

from __future__ import annotations

from longtune.billing.models import BillingAccount, BillingEvent
from tests.org_factories import org_object_factory


@org_object_factory(BillingAccount)
def make_billing_account(org):
    return BillingAccount.objects.create(org=org, stripe_customer_id=f"cus_{org.slug}")


@org_object_factory(BillingEvent)
def make_billing_event(org):
    return BillingEvent.objects.create(org=org, kind="budget_alert", message="50% of the budget")
