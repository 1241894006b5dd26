"""The billing page: plan, state, this period's usage and cost (with a daily chart), budget and
its alerts, invoices; upgrade (Stripe Checkout) and the Customer Portal for those who may.

Every figure comes from the services ``GET /v1/billing`` uses (``billing.usage``), every write
from the service its API twin calls (``set_budget`` as ``PATCH /v1/billing``,
``checkout.checkout_url`` / ``portal_url`` as ``POST /v1/billing/checkout`` / ``portal``), so
the page and the API cannot disagree. With Stripe off the page still shows the computed cost
and the budget; the Stripe buttons say billing is off instead.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from rest_framework import exceptions

from longtune.billing import checkout
from longtune.billing.accounts import account_for, set_budget
from longtune.billing.conf import billing_conf
from longtune.billing.models import BillingEvent
from longtune.billing.serializers import PAID_PLAN_CHOICES, BudgetUpdateSerializer
from longtune.billing.stripe_api import StripeUnavailable
from longtune.billing.usage import daily_costs, period_summary
from longtune.dashboard.errors import field_errors
from longtune.dashboard.orgs import org_page
from longtune.tenancy.roles import role_allows

RECENT_EVENTS = 10


def _chart(org, summary) -> dict[str, Any]:
    """Cumulative usage cost per UTC day of the period (and the budget line, if any)."""
    running, days, cumulative = 0, [], []
    for day in daily_costs(org):
        running += day.usage_cost
        days.append(day.day.date().isoformat())
        cumulative.append(float(running))
    budget = float(summary.budget) if summary.budget is not None else None
    return {
        "start": summary.start.isoformat(),
        "end": summary.end.isoformat(),
        "days": days,
        "cost": cumulative,
        "budget": budget,
    }


def _invoices(request: HttpRequest, account) -> tuple[list[dict], str]:
    """The customer's Stripe invoices, for billing managers of an org that has a customer (the
    page never creates one just to list nothing); Stripe being down is a note, not a 500."""
    if not (billing_conf().enabled and account.stripe_customer_id):
        return [], ""
    if not role_allows(request.role, "billing.manage"):
        return [], ""
    try:
        return checkout.invoices(request.org), ""
    except StripeUnavailable:  # logged by the service
        return [], "Invoices cannot be loaded from Stripe right now; try again later."


@org_page(read="organization.read", write="billing.manage")
def billing(request: HttpRequest) -> HttpResponse:
    """GET: the page. POST: set the monthly budget and hard cap (audited, re-arms alerts)."""
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        raw = request.POST.get("monthly_budget", "").strip()
        body = BudgetUpdateSerializer(
            data={"monthly_budget": raw or None, "hard_cap": request.POST.get("hard_cap") == "on"}
        )
        try:
            body.is_valid(raise_exception=True)
            set_budget(request.org, request=request, **body.validated_data)
            messages.success(request, "Budget saved.")
            return redirect("dashboard:billing", org_slug=request.org.slug)
        except exceptions.APIException as exc:
            errors = field_errors(exc)
    account = account_for(request.org)
    summary = period_summary(request.org, account)
    invoices, invoices_error = _invoices(request, account)
    events = list(BillingEvent.objects.for_org(request.org).order_by("-pk")[:RECENT_EVENTS])
    alerts = [
        e
        for e in events
        if e.kind == "budget_alert" and (e.data or {}).get("period") == f"{summary.start:%Y-%m}"
    ]
    response = render(
        request,
        "dashboard/billing.html",
        {
            "enabled": billing_conf().enabled,
            "account": account,
            "summary": summary,
            "chart": _chart(request.org, summary),
            "paid_plans": [p for p in PAID_PLAN_CHOICES if p[0] != request.org.plan],
            "invoices": invoices,
            "invoices_error": invoices_error,
            "events": events,
            "alerts": alerts,
            "errors": errors,
            "form": request.POST if errors else {},
        },
        status=400 if errors else 200,
    )
    return response


def _to_stripe(request: HttpRequest, make_url) -> HttpResponse:
    """Redirect to a Stripe-hosted page, or back to the billing page with the reason."""
    back = redirect("dashboard:billing", org_slug=request.org.slug)
    if request.method != "POST":
        return back
    try:
        return redirect(make_url())
    except StripeUnavailable:
        messages.error(request, "Stripe is unavailable right now; nothing was changed.")
    except exceptions.APIException as exc:  # billing_disabled, invalid_plan: the API's words
        messages.error(request, " ".join(m for ms in field_errors(exc).values() for m in ms))
    return back


@org_page(read="billing.manage", write="billing.manage")
def billing_checkout(request: HttpRequest) -> HttpResponse:
    """POST plan=pro|enterprise: to Stripe Checkout (the webhook upgrades the plan)."""
    return _to_stripe(request, lambda: checkout.checkout_url(request.org, request.POST.get("plan")))


@org_page(read="billing.manage", write="billing.manage")
def billing_portal(request: HttpRequest) -> HttpResponse:
    """POST: to the Stripe Customer Portal (card, invoices, cancel)."""
    return _to_stripe(request, lambda: checkout.portal_url(request.org))
