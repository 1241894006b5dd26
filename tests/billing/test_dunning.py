"""Dunning: payment failed -> past_due (grace) -> suspended (402 on new work, endpoints stopped)
-> invoice.paid -> active; every transition audited. Budgets: alerts and the hard cap."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from longtune.billing import dunning
from longtune.billing.accounts import account_for
from longtune.billing.guard import BillingSuspended, BudgetExceeded, ensure_billable
from longtune.billing.models import BillingAccount, BillingEvent, BillingState
from longtune.inference.models import Endpoint
from longtune.tenancy.models import AuditLogEntry
from tests.finetuning.helpers import make_base_model, make_file, make_job
from tests.inference.helpers import make_endpoint, make_usage

pytestmark = pytest.mark.django_db


def actions(org) -> list[str]:
    return list(
        AuditLogEntry.objects.for_org(org)
        .filter(action__startswith="billing.")
        .order_by("pk")
        .values_list("action", flat=True)
    )


def expire_grace(org) -> None:
    BillingAccount.objects.for_org(org).update(grace_until=timezone.now() - timedelta(seconds=1))


def test_the_state_machine_and_its_audit_trail(org_a, settings):
    settings.BILLING_GRACE_PERIOD_SECONDS = 3600
    org = org_a.org
    assert dunning.payment_failed(org, invoice_id="in_1")
    account = account_for(org)
    assert account.state == BillingState.PAST_DUE
    assert timedelta(minutes=59) < account.grace_until - timezone.now() <= timedelta(hours=1)
    assert not dunning.payment_failed(org)  # already past due: the grace is not extended
    ensure_billable(org)  # still allowed during the grace period
    assert dunning.sweep()["suspended"] == []  # grace not over yet
    expire_grace(org)
    assert dunning.sweep()["suspended"] == [org.public_id]
    assert account_for(org).state == BillingState.SUSPENDED
    with pytest.raises(BillingSuspended):
        ensure_billable(org)
    assert dunning.payment_succeeded(org, invoice_id="in_1")
    assert account_for(org).state == BillingState.ACTIVE and account_for(org).grace_until is None
    ensure_billable(org)
    assert actions(org) == ["billing.past_due", "billing.suspended", "billing.restored"]
    kinds = list(BillingEvent.objects.for_org(org).order_by("pk").values_list("kind", flat=True))
    assert kinds == ["past_due", "suspended", "restored"]


def test_suspension_stops_running_endpoints_and_deletes_nothing(org_a, org_b):
    ready = make_endpoint(org_a.org, status="ready")
    other_org = make_endpoint(org_b.org, status="ready")
    dunning.payment_failed(org_a.org)
    expire_grace(org_a.org)
    dunning.sweep()
    ready.refresh_from_db()
    other_org.refresh_from_db()
    assert ready.stop_requested and ready.deleted_at is None
    assert not other_org.stop_requested
    assert Endpoint.objects.for_org(org_a.org).count() == 1


def suspended(org) -> None:
    dunning.payment_failed(org)
    expire_grace(org)
    dunning.sweep()


def assert_402(response, code: str = "billing_suspended") -> None:
    assert response.status_code == 402, response.content
    assert response.json()["error"]["code"] == code


def test_a_suspended_org_cannot_start_jobs_or_endpoints_over_the_api(org_a, org_b):
    make_base_model("tiny-test", original=64, maximum=1024)
    file = make_file(org_a.org, num_tokens=1000)
    stopped = make_endpoint(org_a.org, status="stopped")
    suspended(org_a.org)
    client = org_a.client()
    job = client.post(
        "/v1/fine_tuning/jobs",
        {"model": "tiny-test", "training_file": file.public_id},
        format="json",
    )
    assert_402(job)
    assert_402(client.post("/v1/endpoints", {"model": "tiny-test"}, format="json"))
    assert_402(client.post(f"/v1/endpoints/{stopped.public_id}/start"))
    # Another org is unaffected, and so is reading.
    assert (
        org_b.client().post("/v1/endpoints", {"model": "tiny-test"}, format="json").status_code
        == 201
    )
    assert client.get("/v1/endpoints").status_code == 200
    dunning.payment_succeeded(org_a.org)
    assert client.post("/v1/endpoints", {"model": "tiny-test"}, format="json").status_code == 201


def test_budget_alerts_fire_once_per_threshold(org_a):
    org = org_a.org
    BillingAccount.objects.create(org=org, monthly_budget_cents=100)  # $1.00
    endpoint = make_endpoint(org, status="ready")
    make_usage(endpoint, prompt=1_000_000, completion=0)  # free plan: $0.30 = 30%
    assert dunning.sweep()["alerted"] == []
    make_usage(endpoint, prompt=0, completion=500_000)  # + $0.45 = 75%
    assert dunning.sweep()["alerted"] == [org.public_id]
    assert dunning.sweep()["alerted"] == []  # 50% already sent
    make_usage(endpoint, prompt=1_000_000, completion=0)  # 105%
    dunning.sweep()
    alerts = BillingEvent.objects.for_org(org).filter(kind="budget_alert").order_by("pk")
    assert [e.data["percent"] for e in alerts] == [50, 100]


def test_the_hard_cap_refuses_new_billable_work(org_a):
    org = org_a.org
    account = BillingAccount.objects.create(org=org, monthly_budget_cents=100, hard_cap=False)
    make_job(org, status="succeeded", trained_tokens=300_000, finished_at=timezone.now())  # $1.20
    ensure_billable(org)  # a budget without a hard cap only alerts
    BillingAccount.objects.for_org(org).filter(pk=account.pk).update(hard_cap=True)
    with pytest.raises(BudgetExceeded):
        ensure_billable(org)
    make_base_model("tiny-test", original=64, maximum=1024)
    assert_402(
        org_a.client().post("/v1/endpoints", {"model": "tiny-test"}, format="json"),
        "budget_exceeded",
    )


def test_an_org_without_a_billing_account_is_never_refused(org_a):
    ensure_billable(org_a.org)
    assert not BillingAccount.objects.for_org(org_a.org).exists()


def test_the_org_reads_its_billing_events_newest_first(org_a, org_b):
    dunning.payment_failed(org_a.org)
    dunning.payment_succeeded(org_a.org)
    body = org_a.client("member").get("/v1/billing/events").json()
    assert [(e["object"], e["kind"]) for e in body["data"]] == [
        ("billing.event", "restored"),
        ("billing.event", "past_due"),
    ]
    assert body["data"][1]["level"] == "warn" and body["data"][1]["id"].startswith("bevt_")
    assert org_b.client().get("/v1/billing/events").json()["data"] == []
