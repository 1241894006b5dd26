"""``ensure_billable(org)``: the one check before new billable work (a fine-tune job, an
endpoint create or start). Called inside the creating service's quota reservation, so it
reads the account under the same org row lock.

Two refusals, both 402: ``billing_suspended`` (dunning ran out of grace: pay the open invoice)
and ``budget_exceeded`` (the monthly budget's hard cap is reached). Running work is not
touched here; dunning stops running endpoints itself. With no billing account row (billing
never set up for the org) nothing is refused.
"""

from __future__ import annotations

from longtune.api.errors import ApiError
from longtune.billing.models import BillingAccount, BillingState
from longtune.tenancy.models import Organization


class BillingSuspended(ApiError):
    def __init__(self) -> None:
        super().__init__(
            status=402,
            code="billing_suspended",
            message=(
                "Billing for this organization is suspended after a failed payment. Pay the "
                "open invoice (POST /v1/billing/portal) to start new jobs and endpoints."
            ),
        )


class BudgetExceeded(ApiError):
    def __init__(self, budget: str) -> None:
        super().__init__(
            status=402,
            code="budget_exceeded",
            message=(
                f"This month's usage has reached the organization's budget of ${budget} and "
                "its hard cap refuses new billable work. Raise the budget or wait for next month."
            ),
        )


def ensure_billable(org: Organization) -> None:
    account = BillingAccount.objects.for_org(org).filter(org=org).first()
    if account is None:
        return
    if account.state == BillingState.SUSPENDED:
        raise BillingSuspended()
    if account.hard_cap and account.monthly_budget_cents is not None:
        from longtune.billing.usage import period_summary

        summary = period_summary(org, account)
        if summary.cost.usage_total * 100 >= account.monthly_budget_cents:
            raise BudgetExceeded(f"{summary.budget:.2f}")
