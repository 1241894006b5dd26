"""Stripe webhooks: verify, store once, apply in order.

``receive(payload, signature)`` verifies the RAW body with ``stripe.Webhook.construct_event``
(HMAC-SHA256 over ``"{t}.{body}"``, tolerance from conf, 300 s by default), then inserts the
event id into ``WebhookEvent`` — a unique row, so a replayed event (Stripe retries, an
attacker re-posting a captured one) finds it there and changes nothing. Subscription and
invoice events carry their ``created``; an event older than the newest one already applied to
the account (out-of-order delivery) is recorded but not applied.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe
from django.db import IntegrityError, transaction

from longtune.api.errors import ApiError
from longtune.billing import dunning
from longtune.billing.accounts import account_for, locked_account, note, org_for_customer
from longtune.billing.conf import billing_conf
from longtune.billing.models import WebhookEvent
from longtune.billing.plans import plan_for_price, set_plan
from longtune.tenancy.models import AuditAction, Organization, Plan

logger = logging.getLogger("longtune.billing")

ACTIVE_SUBSCRIPTION_STATUSES = ("active", "trialing", "past_due")  # the plan is the price's
ENDED_SUBSCRIPTION_STATUSES = ("canceled", "unpaid", "incomplete_expired")  # back to free


@dataclass(frozen=True)
class Received:
    event_id: str
    type: str
    duplicate: bool
    outcome: str


def _refuse(message: str) -> ApiError:
    return ApiError(status=400, code="invalid_webhook", message=message)


def receive(payload: bytes, signature: str | None) -> Received:
    conf = billing_conf()
    try:
        parsed = json.loads(payload)
    except (ValueError, RecursionError) as error:
        raise _refuse("The body is not a JSON Stripe event.") from error
    if not isinstance(parsed, dict) or not {"id", "type", "data"} <= parsed.keys():
        raise _refuse("The body is not a JSON Stripe event.")
    if not conf.stripe_webhook_secret:
        raise ApiError(status=404, code="not_found", message="Billing webhooks are not enabled.")
    try:
        event = stripe.Webhook.construct_event(
            payload, signature, conf.stripe_webhook_secret, tolerance=conf.webhook_tolerance_seconds
        )
    except stripe.SignatureVerificationError as error:
        raise _refuse(f"Signature verification failed: {error}") from error
    except ValueError as error:
        raise _refuse("The body is not a JSON Stripe event.") from error
    with transaction.atomic():
        try:
            with transaction.atomic():
                stored = WebhookEvent.objects.create(
                    stripe_event_id=event.id, type=event.type, created=int(event.created)
                )
        except IntegrityError:
            return Received(event.id, event.type, duplicate=True, outcome="already processed")
        # The verified body as plain dicts (the handlers read Stripe's JSON, not SDK objects).
        obj = json.loads(payload)["data"]["object"]
        org, outcome = apply(event.type, obj, int(event.created))
        stored.org_public_id = org.public_id if org is not None else ""
        stored.outcome = outcome[:200]
        stored.save(update_fields=["org_public_id", "outcome"])
    return Received(event.id, event.type, duplicate=False, outcome=outcome)


def _org_of(obj: Any) -> Organization | None:
    metadata = obj.get("metadata") or {}
    reference = obj.get("client_reference_id") or metadata.get("org_id")
    if reference:
        org = Organization.objects.filter(public_id=reference).first()
        if org is not None:
            return org
    customer = obj.get("customer")
    return org_for_customer(customer) if isinstance(customer, str) and customer else None


def apply(event_type: str, obj: Any, created: int) -> tuple[Organization | None, str]:
    handler = HANDLERS.get(event_type)
    if handler is None:
        return None, "ignored: unhandled type"
    org = _org_of(obj)
    if org is None:
        logger.warning("stripe %s for an unknown customer %s", event_type, obj.get("customer"))
        return None, "ignored: unknown customer"
    return org, handler(org, obj, created)


def _checkout_completed(org: Organization, session: Any, created: int) -> str:
    account = account_for(org)
    updates: dict[str, Any] = {}
    if session.get("customer") and not account.stripe_customer_id:
        updates["stripe_customer_id"] = session["customer"]
    if session.get("subscription"):
        updates["stripe_subscription_id"] = session["subscription"]
    if updates:
        type(account).objects.for_org(org).filter(pk=account.pk).update(**updates)
    plan = (session.get("metadata") or {}).get("plan")
    if plan in (Plan.PRO, Plan.ENTERPRISE):
        set_plan(org, plan, reason=f"checkout {session.get('id')}")
    return f"checkout completed, plan {plan}"


def _subscription_price(subscription: Any) -> tuple[str, int | None]:
    items = (subscription.get("items") or {}).get("data") or []
    for item in items:
        price = item.get("price") or {}
        if plan_for_price(price.get("id", "")):
            return price["id"], item.get("current_period_end")
    first = items[0] if items else {}
    return (first.get("price") or {}).get("id", ""), first.get("current_period_end")


def _subscription_changed(org: Organization, subscription: Any, created: int) -> str:
    deleted = subscription.get("status") == "canceled"
    with transaction.atomic():
        account = locked_account(org)
        if created < account.subscription_event_created:
            return "ignored: older than the applied subscription state"
        price_id, period_end = _subscription_price(subscription)
        period_end = period_end or subscription.get("current_period_end")
        account.subscription_event_created = created
        account.stripe_subscription_id = "" if deleted else subscription.get("id", "")
        account.subscription_status = subscription.get("status", "")
        account.subscription_price_id = "" if deleted else price_id
        account.current_period_end = (
            datetime.fromtimestamp(period_end, tz=UTC) if period_end and not deleted else None
        )
        if subscription.get("customer") and not account.stripe_customer_id:
            account.stripe_customer_id = subscription["customer"]
        account.save()
        note(
            org,
            "subscription",
            f"Subscription {subscription.get('id')} is {account.subscription_status}.",
            action=AuditAction.BILLING_SUBSCRIPTION_CHANGED,
            data={"subscription": subscription.get("id"), "status": account.subscription_status},
        )
        status = account.subscription_status
        if status in ACTIVE_SUBSCRIPTION_STATUSES and (plan := plan_for_price(price_id)):
            set_plan(org, plan, reason=f"subscription {status}")
        elif status in ENDED_SUBSCRIPTION_STATUSES:
            set_plan(org, Plan.FREE, reason=f"subscription {status}")
        # "incomplete" (first payment pending): the plan stays as it is.
    return f"subscription {account.subscription_status}"


def _subscription_deleted(org: Organization, subscription: Any, created: int) -> str:
    return _subscription_changed(org, {**subscription, "status": "canceled"}, created)


def _invoice_event(kind: str):
    def handle(org: Organization, invoice: Any, created: int) -> str:
        with transaction.atomic():
            account = locked_account(org)
            if created < account.invoice_event_created:
                return "ignored: older than the applied invoice state"
            type(account).objects.for_org(org).filter(pk=account.pk).update(
                invoice_event_created=created
            )
            if kind == "paid":
                changed = dunning.payment_succeeded(org, invoice_id=invoice.get("id", ""))
            else:
                changed = dunning.payment_failed(org, invoice_id=invoice.get("id", ""), reason=kind)
        return f"invoice {kind}" + ("" if changed else " (no state change)")

    return handle


HANDLERS = {
    "checkout.session.completed": _checkout_completed,
    "customer.subscription.created": _subscription_changed,
    "customer.subscription.updated": _subscription_changed,
    "customer.subscription.deleted": _subscription_deleted,
    "invoice.paid": _invoice_event("paid"),
    "invoice.payment_failed": _invoice_event("payment_failed"),
    "invoice.payment_action_required": _invoice_event("payment_action_required"),
}
