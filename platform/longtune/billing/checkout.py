"""Checkout (upgrade), the Customer Portal (self-service) and the invoice list, through Stripe.

Each needs the org's Stripe customer, created here on first need. They run in a request, so
a Stripe failure is a 502 ``stripe_unavailable`` (``stripe_api.stripe_errors_as_502``). The Checkout Session
subscribes the customer to the plan's price plus every configured metered price, and
carries the org and plan in ``client_reference_id``/``metadata`` so the
``checkout.session.completed`` webhook knows whom to upgrade.
"""

from __future__ import annotations

from typing import Any

from longtune.api.errors import ApiError
from longtune.billing import prices
from longtune.billing.accounts import ensure_customer
from longtune.billing.conf import billing_conf
from longtune.billing.stripe_api import stripe_client, stripe_errors_as_502
from longtune.tenancy.models import Organization, Plan

PAID_PLANS = (Plan.PRO, Plan.ENTERPRISE)


@stripe_errors_as_502
def checkout_url(org: Organization, plan: str) -> str:
    conf = billing_conf()
    client = stripe_client()
    price = conf.price_ids.get(plan)
    if plan not in PAID_PLANS or not price:
        raise ApiError(
            status=400,
            code="invalid_plan",
            param="plan",
            message=f"Plan {plan!r} cannot be bought here; choose one of {list(PAID_PLANS)}.",
        )
    customer = ensure_customer(org)
    line_items: list[dict[str, Any]] = [{"price": price, "quantity": 1}]
    line_items += [
        {"price": conf.price_ids[meter]} for meter in prices.METERS if conf.price_ids.get(meter)
    ]
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "customer": customer,
            "client_reference_id": org.public_id,
            "line_items": line_items,
            "metadata": {"org_id": org.public_id, "plan": plan},
            "subscription_data": {"metadata": {"org_id": org.public_id, "plan": plan}},
            "success_url": conf.checkout_success_url,
            "cancel_url": conf.checkout_cancel_url,
        }
    )
    return session.url


@stripe_errors_as_502
def portal_url(org: Organization) -> str:
    session = stripe_client().v1.billing_portal.sessions.create(
        params={"customer": ensure_customer(org), "return_url": billing_conf().portal_return_url}
    )
    return session.url


@stripe_errors_as_502
def invoices(org: Organization, limit: int = 20) -> list[dict[str, Any]]:
    listed = stripe_client().v1.invoices.list(
        params={"customer": ensure_customer(org), "limit": limit}
    )
    return [
        {
            "id": invoice.id,
            "status": invoice.status,
            "currency": invoice.currency,
            "amount_due": invoice.amount_due,
            "amount_paid": invoice.amount_paid,
            "created": invoice.created,
            "hosted_invoice_url": getattr(invoice, "hosted_invoice_url", None),
        }
        for invoice in listed.data
    ]
