"""Reconciliation (command + admin action), staff plan override and credits (audited), and the
job's cost estimate."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.utils import timezone

from longtune.billing import outbox
from longtune.billing.models import BillingAccount, MeterEvent
from longtune.billing.reconcile import reconcile
from longtune.tenancy.models import AuditLogEntry
from tests.finetuning.helpers import make_job
from tests.inference.helpers import make_endpoint, make_usage

pytestmark = pytest.mark.django_db


def test_reconcile_flags_usage_not_yet_sent(billing_on, org_a, capsys):
    make_usage(make_endpoint(org_a.org), prompt=300, completion=30)
    outbox.collect()  # in the outbox, not sent
    rows = {row.meter: row for row in reconcile([org_a.org])}
    assert (rows["prompt_tokens"].ledger, rows["prompt_tokens"].sent) == (300, 0)
    assert rows["prompt_tokens"].pending == 300 and rows["prompt_tokens"].missing == 300
    with pytest.raises(SystemExit) as exited:
        call_command("billing_reconcile", "--org", org_a.org.slug)
    assert exited.value.code == 1 and "MISSING 300" in capsys.readouterr().out

    outbox.send_pending()
    call_command("billing_reconcile", "--org", org_a.org.slug)  # all sent: exit 0
    assert "MISSING" not in capsys.readouterr().out
    assert all(row.missing == 0 for row in reconcile([org_a.org]))


def test_reconcile_would_catch_over_reporting(billing_on, org_a):
    """Build the violation: an event sent for usage the ledger does not have."""
    MeterEvent.objects.create(
        org=org_a.org,
        source="inference_usage",
        source_pk=999,
        identifier="usage_ghost:prompt_tokens",
        meter="prompt_tokens",
        value=5,
        timestamp=timezone.now(),
        sent_at=timezone.now(),
    )
    rows = {row.meter: row for row in reconcile([org_a.org])}
    assert rows["prompt_tokens"].missing == -5


@pytest.fixture
def staff(admin_client):
    return admin_client


def test_staff_override_plan_and_credit_are_audited(staff, org_a):
    account = BillingAccount.objects.create(org=org_a.org)
    url = "/admin/billing/billingaccount/"
    response = staff.post(url, {"action": "set_plan_enterprise", "_selected_action": [account.pk]})
    assert response.status_code == 302
    org_a.org.refresh_from_db()
    assert org_a.org.plan == "enterprise"
    change = staff.get(f"{url}{account.pk}/change/")
    assert change.status_code == 200
    form = {
        "org": org_a.org.pk,
        "stripe_customer_id": "",
        "stripe_subscription_id": "",
        "subscription_status": "",
        "subscription_price_id": "",
        "state": "active",
        "credit_cents": 2500,
        "budget_alert_period": "",
        "budget_alert_percent": 0,
        "monthly_budget_cents": 10000,
        "hard_cap": "on",
        "public_id": account.public_id,
    }
    saved = staff.post(f"{url}{account.pk}/change/", form)
    assert saved.status_code == 302, saved.content[:2000]
    actions = set(AuditLogEntry.objects.for_org(org_a.org).values_list("action", flat=True))
    assert {"billing.plan_changed", "billing.credit_granted", "billing.budget_changed"} <= actions
    assert staff.get("/admin/billing/meterevent/").status_code == 200
    assert staff.get("/admin/billing/webhookevent/").status_code == 200
    reconciled = staff.post(
        url, {"action": "reconcile_period", "_selected_action": [account.pk]}, follow=True
    )
    assert reconciled.status_code == 200


def test_jobs_carry_a_cost_estimate(org_a):
    job = make_job(org_a.org, estimated_tokens=2_500_000, status="queued")
    body = org_a.client().get(f"/v1/fine_tuning/jobs/{job.public_id}").json()
    assert (body["estimated_tokens"], body["estimated_cost"]) == (2_500_000, "10.00")  # free: $4/1M
