"""/v1/billing, checkout, portal and invoices: billing off (computed cost only) and on (fake Stripe)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from longtune.billing.accounts import account_for
from longtune.billing.models import BillingAccount
from tests.finetuning.helpers import make_job
from tests.inference.helpers import make_endpoint, make_usage

pytestmark = pytest.mark.django_db


def test_billing_off_still_shows_usage_cost_and_budget(org_a):
    org = org_a.org
    BillingAccount.objects.create(org=org, monthly_budget_cents=10_000, credit_cents=50)
    make_usage(make_endpoint(org), prompt=2_000_000, completion=1_000_000)
    make_job(org, status="succeeded", trained_tokens=5_000_000, finished_at=timezone.now())
    body = org_a.client("member").get("/v1/billing").json()
    assert body["object"] == "billing" and body["enabled"] is False
    assert (body["plan"], body["state"], body["subscription_status"]) == ("free", "active", None)
    period = body["current_period"]
    lines = {line["meter"]: line for line in period["usage"]}
    assert lines["training_tokens"] == {
        "meter": "training_tokens",
        "quantity": 5_000_000,
        "unit": "1M training tokens",
        "unit_price": "4.00",
        "amount": "20.00",
    }
    assert (
        lines["prompt_tokens"]["amount"] == "0.60"
        and lines["completion_tokens"]["amount"] == "0.90"
    )
    assert (period["subscription_fee"], period["usage_cost"], period["credit"]) == (
        "0.00",
        "21.50",
        "0.50",
    )
    assert period["cost_so_far"] == "21.00"
    assert body["budget"] == {"monthly_budget": "100.00", "hard_cap": False, "used_percent": 21}


def test_billing_is_per_org(org_a, org_b):
    make_usage(make_endpoint(org_a.org), prompt=1_000_000, completion=0)
    body = org_b.client().get("/v1/billing").json()
    assert all(line["quantity"] == 0 for line in body["current_period"]["usage"])


def test_checkout_and_portal_need_billing_on(org_a):
    response = org_a.client().post("/v1/billing/checkout", {"plan": "pro"}, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "billing_disabled"


def test_checkout_creates_one_customer_and_a_subscription_session(billing_on, org_a):
    client = org_a.client()
    first = client.post("/v1/billing/checkout", {"plan": "pro"}, format="json")
    assert first.status_code == 200, first.content
    assert first.json()["url"].startswith(f"{billing_on.url}/checkout/cs_test_")
    client.post("/v1/billing/checkout", {"plan": "enterprise"}, format="json")
    state = billing_on.state()
    assert len(state["customers"]) == 1  # created on first need, then reused
    customer = state["customers"][0]
    assert customer["metadata"] == {"org_id": org_a.org.public_id, "org_slug": org_a.org.slug}
    assert account_for(org_a.org).stripe_customer_id == customer["id"]
    session = state["checkout_sessions"][0]
    assert session["mode"] == "subscription" and session["customer"] == customer["id"]
    assert session["client_reference_id"] == org_a.org.public_id
    assert session["metadata"] == {"org_id": org_a.org.public_id, "plan": "pro"}
    assert [item["price"] for item in session["line_items"]] == [
        "price_pro_monthly",
        "price_training_tokens",
        "price_prompt_tokens",
        "price_completion_tokens",
    ]


def test_checkout_refuses_free_and_non_owners(billing_on, org_a):
    assert (
        org_a.client().post("/v1/billing/checkout", {"plan": "free"}, format="json").status_code
        == 400
    )
    assert (
        org_a.client("admin")
        .post("/v1/billing/checkout", {"plan": "pro"}, format="json")
        .status_code
        == 403
    )


def test_portal_and_invoices(billing_on, org_a):
    client = org_a.client()
    portal = client.post("/v1/billing/portal")
    assert portal.status_code == 200 and "/portal/bps_" in portal.json()["url"]
    customer = account_for(org_a.org).stripe_customer_id
    billing_on.control("invoices", {"customer": customer, "status": "open", "amount_due": 4900})
    billing_on.control(
        "invoices", {"customer": "cus_someone_else", "status": "paid", "amount_due": 1}
    )
    invoices = client.get("/v1/billing/invoices").json()
    assert invoices["object"] == "list"
    assert [(i["status"], i["amount_due"], i["currency"]) for i in invoices["data"]] == [
        ("open", 4900, "usd")
    ]


def test_the_openapi_schema_describes_the_billing_routes(client):
    schema = client.get("/v1/openapi.json").json()
    billing = schema["paths"]["/v1/billing"]["get"]
    ref = billing["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    component = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert {"plan", "state", "current_period", "budget", "enabled"} <= set(component["properties"])
    for path in ("/v1/billing/checkout", "/v1/billing/portal", "/v1/billing/webhooks/stripe"):
        assert "post" in schema["paths"][path]
    assert "get" in schema["paths"]["/v1/billing/invoices"]


def test_the_owner_sets_the_budget_and_hard_cap(org_a):
    client = org_a.client()
    body = client.patch(
        "/v1/billing", {"monthly_budget": "250.00", "hard_cap": True}, format="json"
    )
    assert body.status_code == 200, body.content
    assert body.json()["budget"] == {
        "monthly_budget": "250.00",
        "hard_cap": True,
        "used_percent": 0,
    }
    assert BillingAccount.objects.for_org(org_a.org).get().monthly_budget_cents == 25_000
    cleared = client.patch("/v1/billing", {"monthly_budget": None}, format="json").json()
    assert cleared["budget"]["monthly_budget"] is None and cleared["budget"]["hard_cap"] is True
    assert client.patch("/v1/billing", {"monthly_budget": "-1"}, format="json").status_code == 400
    assert client.patch("/v1/billing", {"budget": "1"}, format="json").status_code == 400
    assert client.patch("/v1/billing", {}, format="json").status_code == 400
    assert (
        org_a.client("admin").patch("/v1/billing", {"hard_cap": False}, format="json").status_code
        == 403
    )
    from longtune.tenancy.models import AuditLogEntry

    assert (
        AuditLogEntry.objects.for_org(org_a.org).filter(action="billing.budget_changed").count()
        == 2
    )


def test_stripe_down_is_a_coded_502_not_a_500(billing_on, org_a, settings):
    client = org_a.client()
    assert client.post("/v1/billing/portal").status_code == 200  # the customer exists now
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens there
    for response in (
        client.post("/v1/billing/portal"),
        client.post("/v1/billing/checkout", {"plan": "pro"}, format="json"),
        client.get("/v1/billing/invoices"),
    ):
        assert response.status_code == 502, response.content
        assert response.json()["error"]["code"] == "stripe_unavailable"
    assert client.get("/v1/billing").status_code == 200  # the computed side needs no Stripe
