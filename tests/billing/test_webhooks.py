"""Stripe webhooks: verified with the real ``stripe.Webhook.construct_event`` over the raw body,
stored once, applied in order. Events are made and signed by the fake Stripe process."""

from __future__ import annotations

import time

import pytest

from longtune.billing.accounts import account_for
from longtune.billing.models import BillingAccount, WebhookEvent
from longtune.tenancy.models import AuditLogEntry, Organization
from longtune.tenancy.quotas import PLAN_QUOTAS, effective_quota
from tests.conftest import api_client

pytestmark = pytest.mark.django_db
URL = "/v1/billing/webhooks/stripe"


def deliver(signed: dict, *, signature: str | None = None, body: str | None = None):
    return api_client().post(
        URL,
        data=body if body is not None else signed["payload"],
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=signature if signature is not None else signed["signature"],
    )


def _with_customer(org, customer="cus_webhook"):
    BillingAccount.objects.create(org=org, stripe_customer_id=customer)
    return customer


def _subscription(customer: str, price: str, status: str = "active", sub_id: str = "sub_1") -> dict:
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "items": {
            "object": "list",
            "data": [{"price": {"id": price}, "current_period_end": int(time.time()) + 86400}],
        },
    }


def test_checkout_completed_upgrades_the_plan_and_raises_quotas(billing_on, org_a):
    org = org_a.org
    assert effective_quota(org) == PLAN_QUOTAS["free"]
    signed = billing_on.event(
        "checkout.session.completed",
        {
            "id": "cs_1",
            "object": "checkout.session",
            "customer": "cus_new",
            "subscription": "sub_9",
            "client_reference_id": org.public_id,
            "metadata": {"org_id": org.public_id, "plan": "pro"},
        },
    )
    response = deliver(signed)
    assert response.status_code == 200, response.content
    assert response.json() == {"received": True, "duplicate": False}
    org.refresh_from_db()
    assert org.plan == "pro" and effective_quota(org) == PLAN_QUOTAS["pro"]
    account = account_for(org)
    assert (account.stripe_customer_id, account.stripe_subscription_id) == ("cus_new", "sub_9")
    assert AuditLogEntry.objects.for_org(org).filter(action="billing.plan_changed").count() == 1


def test_a_forged_signature_is_refused(billing_on, org_a):
    customer = _with_customer(org_a.org)
    signed = billing_on.event(
        "invoice.payment_failed", {"id": "in_1", "customer": customer}, secret="whsec_attacker"
    )
    response = deliver(signed)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_webhook"
    assert not WebhookEvent.objects.exists()
    assert account_for(org_a.org).state == "active"


def test_a_tampered_body_is_refused(billing_on, org_a):
    customer = _with_customer(org_a.org)
    signed = billing_on.event("invoice.paid", {"id": "in_1", "customer": customer})
    tampered = signed["payload"].replace("invoice.paid", "invoice.payment_failed")
    assert deliver(signed, body=tampered).status_code == 400
    assert deliver(signed, signature="").status_code == 400


def test_a_stale_timestamp_is_refused(billing_on, org_a):
    customer = _with_customer(org_a.org)
    stale = billing_on.event(
        "invoice.payment_failed",
        {"id": "in_1", "customer": customer},
        sign_at=int(time.time()) - 301,
    )
    assert deliver(stale).status_code == 400
    fresh = billing_on.event(
        "invoice.payment_failed",
        {"id": "in_1", "customer": customer},
        sign_at=int(time.time()) - 200,
    )
    assert deliver(fresh).status_code == 200


def test_a_replayed_event_is_processed_once(billing_on, org_a):
    customer = _with_customer(org_a.org)
    signed = billing_on.event("invoice.payment_failed", {"id": "in_1", "customer": customer})
    assert deliver(signed).json()["duplicate"] is False
    assert deliver(signed).json() == {"received": True, "duplicate": True}
    assert WebhookEvent.objects.filter(stripe_event_id=signed["event"]["id"]).count() == 1
    assert AuditLogEntry.objects.for_org(org_a.org).filter(action="billing.past_due").count() == 1


def test_an_older_subscription_update_never_overwrites_a_newer_state(billing_on, org_a):
    org = org_a.org
    customer = _with_customer(org)
    now = int(time.time())
    newer = billing_on.event(
        "customer.subscription.updated",
        _subscription(customer, "price_enterprise_monthly"),
        created=now,
    )
    older = billing_on.event(
        "customer.subscription.updated",
        _subscription(customer, "price_pro_monthly"),
        created=now - 60,
    )
    assert deliver(newer).status_code == 200
    assert deliver(older).status_code == 200  # accepted (Stripe must stop retrying)...
    org.refresh_from_db()
    assert org.plan == "enterprise"  # ...but not applied
    assert WebhookEvent.objects.get(stripe_event_id=older["event"]["id"]).outcome.startswith(
        "ignored"
    )


def test_an_incomplete_subscription_does_not_downgrade_a_paid_plan(billing_on, org_a):
    org = org_a.org
    customer = _with_customer(org)
    now = int(time.time())
    deliver(
        billing_on.event(
            "customer.subscription.updated",
            _subscription(customer, "price_pro_monthly"),
            created=now - 5,
        )
    )
    deliver(
        billing_on.event(
            "customer.subscription.updated",
            _subscription(customer, "price_pro_monthly", status="incomplete"),
            created=now,
        )
    )
    org.refresh_from_db()
    assert org.plan == "pro" and account_for(org).subscription_status == "incomplete"


def test_subscription_deleted_returns_the_org_to_free(billing_on, org_a):
    org = org_a.org
    customer = _with_customer(org)
    now = int(time.time())
    deliver(
        billing_on.event(
            "customer.subscription.created",
            _subscription(customer, "price_pro_monthly"),
            created=now - 10,
        )
    )
    org.refresh_from_db()
    assert org.plan == "pro"
    deliver(
        billing_on.event(
            "customer.subscription.deleted",
            _subscription(customer, "price_pro_monthly", status="canceled"),
            created=now,
        )
    )
    org.refresh_from_db()
    account = account_for(org)
    assert org.plan == "free" and account.stripe_subscription_id == ""
    assert account.subscription_status == "canceled"


def test_out_of_order_invoice_events_keep_the_newest(billing_on, org_a):
    customer = _with_customer(org_a.org)
    now = int(time.time())
    paid = billing_on.event("invoice.paid", {"id": "in_2", "customer": customer}, created=now)
    failed = billing_on.event(
        "invoice.payment_failed", {"id": "in_1", "customer": customer}, created=now - 30
    )
    deliver(paid)
    deliver(failed)  # the older failure arrives late
    assert account_for(org_a.org).state == "active"


def test_unknown_customers_and_types_are_accepted_and_ignored(billing_on, org_a):
    assert (
        deliver(
            billing_on.event("invoice.paid", {"id": "in_1", "customer": "cus_nobody"})
        ).status_code
        == 200
    )
    assert deliver(billing_on.event("charge.refunded", {"id": "ch_1"})).status_code == 200
    assert {e.outcome for e in WebhookEvent.objects.all()} == {
        "ignored: unknown customer",
        "ignored: unhandled type",
    }
    assert Organization.objects.get(pk=org_a.org.pk).plan == "free"


def test_without_a_webhook_secret_the_endpoint_is_off(org_a):
    event = '{"id": "evt_1", "type": "invoice.paid", "data": {"object": {}}}'
    response = api_client().post(URL, data=event, content_type="application/json")
    assert response.status_code == 404
    assert api_client().post(URL, data="NaN", content_type="application/json").status_code == 400


def test_a_meter_error_report_marks_the_rejected_outbox_rows(billing_on, org_a):
    """Stripe accepted a batch, then rejected some events asynchronously: the thin event is
    verified, the full event fetched, the rows marked; reconciliation stops counting them."""
    from longtune.billing import outbox
    from longtune.billing.models import MeterEvent
    from longtune.billing.reconcile import reconcile
    from tests.inference.helpers import make_endpoint, make_usage

    record = make_usage(make_endpoint(org_a.org), prompt=40, completion=4)
    outbox.run_outbox()
    rejected = f"{record.public_id}:prompt_tokens"
    report = billing_on.control(
        "meter_error_report",
        {"identifiers": [rejected], "code": "timestamp_too_far_in_past", "message": "too old"},
    )
    thin = "/v1/billing/webhooks/stripe/thin"
    forged = api_client().post(
        thin,
        data=report["payload"],
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=report["signature"].replace("v1=", "v1=0"),
    )
    assert forged.status_code == 400
    response = api_client().post(
        thin,
        data=report["payload"],
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=report["signature"],
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"received": True, "duplicate": False}
    row = MeterEvent.objects.for_org(org_a.org).get(identifier=rejected)
    assert row.stripe_error == "timestamp_too_far_in_past: too old"
    assert (
        not MeterEvent.objects.for_org(org_a.org)
        .exclude(identifier=rejected)
        .exclude(stripe_error="")
        .exists()
    )
    rows = {r.meter: r for r in reconcile([org_a.org])}
    assert rows["prompt_tokens"].missing == 40 and rows["completion_tokens"].missing == 0
    again = api_client().post(
        thin,
        data=report["payload"],
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=report["signature"],
    )
    assert again.json()["duplicate"] is True
