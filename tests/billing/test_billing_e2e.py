"""End to end with a real Celery worker, the real Redis broker and the fake Stripe process:
sign up -> checkout -> webhook upgrades the plan (quotas raised) -> ledger rows become meter
events sent by the worker, identifiers = ledger ids -> payment fails -> grace -> the worker's
dunning sweep suspends (new work 402, endpoint stopped) -> invoice.paid -> active again.

The ledger rows are written directly (a real fine-tune and chat calls are covered by the
finetuning/inference end-to-end tests; what is under test here is what billing does with the
rows they write)."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone

from longtune.billing.models import BillingAccount, MeterEvent
from longtune.compute import broker, queues, tasks
from longtune.inference.models import Endpoint
from longtune.tenancy.models import Organization
from longtune.tenancy.quotas import PLAN_QUOTAS, effective_quota
from tests.billing.conftest import API_KEY, WEBHOOK_SECRET
from tests.billing.test_webhooks import deliver
from tests.conftest import api_client, signup_and_confirm
from tests.finetuning.helpers import make_base_model, make_file, make_job
from tests.inference.helpers import make_endpoint, make_usage

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def run_task(name: str) -> dict:
    """Publish through the one publisher and wait for the worker's answer."""
    return broker.send(name, [], queues.CPU).get(timeout=60)


def test_signup_to_suspension_and_back(billing_on, settings, start_worker):
    settings.BILLING_GRACE_PERIOD_SECONDS = 1
    start_worker(
        queues="cpu",
        STRIPE_API_KEY=API_KEY,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        STRIPE_API_BASE=billing_on.url,
        STRIPE_METER_EVENTS_BASE=billing_on.url,
    )
    signup = signup_and_confirm("cfo@example.com", "correct horse battery staple 42", "Paying Co")
    client = api_client(signup["api_key"]["secret"])
    org = Organization.objects.get(name="Paying Co")

    # Checkout, then Stripe's checkout.session.completed webhook: plan and quotas go up.
    assert client.post("/v1/billing/checkout", {"plan": "pro"}, format="json").status_code == 200
    session = billing_on.state()["checkout_sessions"][0]
    completed = billing_on.event(
        "checkout.session.completed", {**session, "status": "complete", "subscription": "sub_e2e"}
    )
    assert deliver(completed).status_code == 200
    org.refresh_from_db()
    assert org.plan == "pro" and effective_quota(org) == PLAN_QUOTAS["pro"]
    customer = BillingAccount.objects.for_org(org).get().stripe_customer_id

    # Usage rows -> the worker's outbox task -> meter events keyed by the ledger ids.
    endpoint = make_endpoint(org, status="ready")
    chats = [make_usage(endpoint, prompt=50, completion=20) for _ in range(3)]
    job = make_job(org, status="succeeded", trained_tokens=4096, finished_at=timezone.now())
    result = run_task(tasks.BILLING_SEND_METER_EVENTS)
    assert result == {"enabled": True, "sent": 7, "batches": 1, "errors": []}
    events = {e["identifier"]: e for e in billing_on.state()["meter_events"]}
    expected = {f"{c.public_id}:{m}" for c in chats for m in ("prompt_tokens", "completion_tokens")}
    assert set(events) == expected | {f"{job.public_id}:training_tokens"}
    assert {e["payload"]["stripe_customer_id"] for e in events.values()} == {customer}
    assert run_task(tasks.BILLING_SEND_METER_EVENTS)["sent"] == 0  # nothing twice

    # Payment fails -> past due; after the grace the worker's sweep suspends the org.
    failed = billing_on.event("invoice.payment_failed", {"id": "in_e2e", "customer": customer})
    assert deliver(failed).status_code == 200
    time.sleep(1.2)
    assert run_task(tasks.BILLING_DUNNING_SWEEP)["suspended"] == [org.public_id]
    assert Endpoint.objects.for_org(org).get(pk=endpoint.pk).stop_requested
    make_base_model("tiny-test", original=64, maximum=1024)
    file = make_file(org, num_tokens=1000)
    refused = client.post(
        "/v1/fine_tuning/jobs",
        {"model": "tiny-test", "training_file": file.public_id},
        format="json",
    )
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "billing_suspended"
    assert client.get("/v1/billing").json()["state"] == "suspended"

    # The invoice is paid: active again, new work accepted.
    paid = billing_on.event("invoice.paid", {"id": "in_e2e", "customer": customer})
    assert deliver(paid).status_code == 200
    assert client.get("/v1/billing").json()["state"] == "active"
    assert client.post(f"/v1/endpoints/{endpoint.public_id}/start").status_code in (200, 409)
    assert MeterEvent.objects.for_org(org).filter(sent_at__isnull=True).count() == 0
