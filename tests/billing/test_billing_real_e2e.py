"""The whole billing story with every real part: real Celery workers (training on `cpu,gpu`,
the replica on `inference`), the real Redis broker, moto's S3, a real tiny-Llama fine-tune,
real chat calls through the gateway (the `openai` client against the live server) to a real
replica, and the fake Stripe process, which signs each webhook with Stripe's scheme and POSTs
it to the live server itself:

sign up -> checkout -> checkout.session.completed (delivered by the fake) -> plan pro, quotas
raised -> fine-tune + chat -> the worker's outbox task sends one meter event per ledger line,
identifier = ledger id -> invoice.payment_failed -> grace -> the worker's dunning sweep
suspends (new job 402 billing_suspended, the replica stops) -> invoice.paid -> active again.
"""

from __future__ import annotations

import time

import openai
import pytest

from longtune.billing.models import BillingAccount, MeterEvent
from longtune.compute import broker, queues, tasks
from longtune.finetuning.models import FineTuningJob
from longtune.inference.models import UsageRecord
from longtune.tenancy.models import Organization, OrgQuota, User
from longtune.tenancy.quotas import PLAN_QUOTAS, effective_quota
from tests.billing.conftest import API_KEY, WEBHOOK_SECRET
from tests.conftest import OrgHandle, api_client, openai_client, signup_and_confirm
from tests.finetuning.conftest import FAST_WORKER_ENV, TINY_ORIGINAL_CONTEXT, wait_for
from tests.finetuning.helpers import chat_examples, make_base_model, make_file
from tests.inference.test_serving_e2e import FAST_REPLICA_ENV, train_fine_tuned_model

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
WEBHOOK_PATH = "/v1/billing/webhooks/stripe"


def run_task(name: str) -> dict:
    """Publish through the one publisher; the worker's answer."""
    return broker.send(name, [], queues.CPU).get(timeout=120)


def test_real_fine_tune_and_chat_are_metered_and_dunning_suspends_and_restores(
    billing_on, settings, live_server, start_worker, shared_storage, tiny_base_dir
):
    settings.BILLING_GRACE_PERIOD_SECONDS = 2
    stripe_env = {
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": billing_on.url,
        "STRIPE_METER_EVENTS_BASE": billing_on.url,
    }
    webhook_url = f"{live_server.url}{WEBHOOK_PATH}"

    def stripe_sends(type: str, obj: dict) -> None:
        """The fake Stripe makes, signs and POSTs the event to the live server."""
        delivery = billing_on.event(type, obj, deliver_to=webhook_url)["delivery"]
        assert delivery["status"] == 200, delivery

    # Sign up (a free org with its owner's first key).
    signup = signup_and_confirm("cfo@example.com", "correct horse battery staple 42", "Paying Co")
    org = Organization.objects.get(name="Paying Co")
    handle = OrgHandle(
        org=org,
        owner=User.objects.get(email="cfo@example.com"),
        owner_secret=signup["api_key"]["secret"],
    )
    owner = api_client(handle.owner_secret)
    assert org.plan == "free" and effective_quota(org) == PLAN_QUOTAS["free"]

    # Upgrade: a Checkout Session in Stripe, then Stripe's webhook raises plan and quotas.
    checkout = owner.post("/v1/billing/checkout", {"plan": "pro"}, format="json")
    assert checkout.status_code == 200, checkout.content
    session = billing_on.state()["checkout_sessions"][0]
    assert session["url"] == checkout.json()["url"] and session["client_reference_id"] == (
        org.public_id
    )
    stripe_sends(
        "checkout.session.completed", {**session, "status": "complete", "subscription": "sub_e2e"}
    )
    org.refresh_from_db()
    assert org.plan == "pro" and effective_quota(org) == PLAN_QUOTAS["pro"]
    assert PLAN_QUOTAS["pro"] != PLAN_QUOTAS["free"]
    customer = BillingAccount.objects.for_org(org).get().stripe_customer_id
    assert customer.startswith("cus_")
    OrgQuota.objects.create(org=org, requests_per_minute=100_000)  # the test's pace, not a plan

    # A real fine-tune on a real worker (which also runs billing's beat tasks on `cpu`).
    make_base_model("tiny-serve", tiny_base_dir, original=TINY_ORIGINAL_CONTEXT, maximum=1024)
    trainer = start_worker(queues="cpu,gpu", **FAST_WORKER_ENV, **stripe_env)
    model_name = train_fine_tuned_model(handle, trainer)
    job = FineTuningJob.objects.for_org(org).get(status="succeeded")
    assert job.trained_tokens > 0

    # Deploy it; real chat calls through the gateway to the replica write the ledger.
    replica_worker = start_worker(queues="inference", **FAST_REPLICA_ENV)
    created = owner.post("/v1/endpoints", {"model": model_name}, format="json")
    assert created.status_code == 201, created.content
    endpoint_url = f"/v1/endpoints/{created.json()['id']}"
    wait_for(
        lambda: owner.get(endpoint_url).json()["status"] in ("ready", "failed"),
        timeout=180,
        what="the endpoint to be ready",
        worker=replica_worker,
    )
    assert owner.get(endpoint_url).json()["status"] == "ready", replica_worker.read_log()[-3000:]
    chat = openai_client(handle.key("member", scopes=["inference"]), live_server)
    replies = [
        chat.chat.completions.create(
            model=model_name,
            messages=[{"role": "user", "content": f"hello there number {n} how are you"}],
            max_tokens=6,
            temperature=0,
        )
        for n in range(3)
    ]
    chats = [UsageRecord.objects.for_org(org).get(request_id=reply.id) for reply in replies]
    assert all(row.prompt_tokens > 0 and row.completion_tokens > 0 for row in chats)

    # The worker's outbox task: one meter event per ledger line, keyed by the ledger ids.
    result = run_task(tasks.BILLING_SEND_METER_EVENTS)
    assert result["enabled"] is True and result["errors"] == [] and result["sent"] == 7
    sent = {e["identifier"]: e for e in billing_on.state()["meter_events"]}
    expected = {
        f"{row.public_id}:{meter}": value
        for row in chats
        for meter, value in (
            ("prompt_tokens", row.prompt_tokens),
            ("completion_tokens", row.completion_tokens),
        )
    }
    expected[f"{job.public_id}:training_tokens"] = job.trained_tokens
    assert {identifier: int(e["payload"]["value"]) for identifier, e in sent.items()} == expected
    assert {e["payload"]["stripe_customer_id"] for e in sent.values()} == {customer}
    assert {e["event_name"] for e in sent.values()} == {
        "longtune_prompt_tokens",
        "longtune_completion_tokens",
        "longtune_training_tokens",
    }
    assert run_task(tasks.BILLING_SEND_METER_EVENTS)["sent"] == 0  # nothing twice
    assert not MeterEvent.objects.for_org(org).filter(sent_at__isnull=True).exists()
    billing = owner.get("/v1/billing").json()
    usage = {line["meter"]: line["quantity"] for line in billing["current_period"]["usage"]}
    assert usage["training_tokens"] == job.trained_tokens
    assert usage["prompt_tokens"] == sum(row.prompt_tokens for row in chats)

    # Payment fails -> past due; work continues during the grace.
    stripe_sends("invoice.payment_failed", {"id": "in_e2e", "customer": customer})
    assert owner.get("/v1/billing").json()["state"] == "past_due"
    assert owner.get(endpoint_url).json()["status"] == "ready"

    # Grace over: the worker's sweep suspends; the replica stops; new work is 402.
    time.sleep(2.2)
    assert run_task(tasks.BILLING_DUNNING_SWEEP)["suspended"] == [org.public_id]
    wait_for(
        lambda: owner.get(endpoint_url).json()["status"] == "stopped",
        timeout=60,
        what="the replica to stop on suspension",
        worker=replica_worker,
    )
    file = make_file(org, chat_examples(4))
    refused = owner.post(
        "/v1/fine_tuning/jobs", {"model": "tiny-serve", "training_file": file.public_id},
        format="json",
    )  # fmt: skip
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "billing_suspended"
    restart = owner.post(f"{endpoint_url}/start")
    assert restart.status_code == 402 and restart.json()["error"]["code"] == "billing_suspended"
    with pytest.raises(openai.NotFoundError):  # the stopped endpoint serves nothing
        chat.chat.completions.create(
            model=model_name, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert FineTuningJob.objects.for_org(org).count() == 1  # nothing created, nothing deleted
    assert UsageRecord.objects.for_org(org).count() == 3

    # The invoice is paid: active again; the endpoint may start.
    stripe_sends("invoice.paid", {"id": "in_e2e", "customer": customer})
    assert owner.get("/v1/billing").json()["state"] == "active"
    started = owner.post(f"{endpoint_url}/start")
    assert started.status_code == 200, started.content
    owner.post(f"{endpoint_url}/stop")
    kinds = [e["kind"] for e in owner.get("/v1/billing/events?limit=100").json()["data"]]
    assert {"plan_changed", "past_due", "suspended", "restored"} <= set(kinds)
