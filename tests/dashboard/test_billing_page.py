"""The dashboard's billing page: plan, state, this period's cost with its daily chart, budget
and alerts, invoices, upgrade/portal buttons by role, the past-due / suspended (402) banner on
every org page; its forms call the API's services. A browser run checks it with axe-core."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from longtune.billing import dunning
from longtune.billing.accounts import account_for
from longtune.billing.models import BillingAccount, BillingEvent, BillingState
from longtune.tenancy.models import AuditLogEntry, Organization
from tests.billing.conftest import billing_on, fake_stripe  # noqa: F401 - fixtures
from tests.dashboard.conftest import session_client
from tests.fixtures.services import asgi_server
from tests.inference.helpers import make_endpoint, make_usage

pytestmark = pytest.mark.django_db


def url(name: str, org) -> str:
    return reverse(f"dashboard:{name}", args=[org.slug])


def test_billing_off_shows_the_computed_cost_chart_and_no_stripe_buttons(org_a, org_b):
    endpoint = make_endpoint(org_a.org, status="ready")
    make_usage(endpoint, prompt=1_000_000, completion=1_000_000)  # free: $0.30 + $0.90
    make_usage(make_endpoint(org_b.org, status="ready"), prompt=9_000_000, completion=0)
    page = session_client(org_a.owner).get(url("billing", org_a.org))
    assert page.status_code == 200
    body = page.content.decode()
    assert page.context["summary"].cost.usage_total == Decimal("1.20")  # org B not counted
    assert 'id="cost-so-far">$1.20<' in body
    assert "off: costs are computed here" in body and "Upgrade to" not in body
    chart = page.context["chart"]
    assert chart["days"][-1] == timezone.now().date().isoformat()
    assert chart["cost"][-1] == pytest.approx(1.20) and chart["budget"] is None
    assert 'id="billing-data"' in body and 'id="billing-chart"' in body
    assert "Invoices" not in body  # nothing to list without Stripe


def test_the_budget_form_calls_the_api_service_and_shows_alerts(
    org_a, django_capture_on_commit_callbacks
):
    client = session_client(org_a.owner)
    saved = client.post(url("billing", org_a.org), {"monthly_budget": "2.00", "hard_cap": "on"})
    assert saved.status_code == 302
    account = account_for(org_a.org)
    assert (account.monthly_budget_cents, account.hard_cap) == (200, True)
    assert AuditLogEntry.objects.for_org(org_a.org).filter(action="billing.budget_changed")

    make_usage(make_endpoint(org_a.org, status="ready"), prompt=4_000_000, completion=0)  # $1.20
    with django_capture_on_commit_callbacks(execute=True):
        dunning.sweep()
    body = client.get(url("billing", org_a.org)).content.decode()
    assert "60% of the $2.00 monthly budget used; hard cap on" in body
    assert re.search(r'id="budget-alerts">.*reached 50% of the \$2.00 budget', body, re.S)

    refused = client.post(url("billing", org_a.org), {"monthly_budget": "-5"})
    assert refused.status_code == 400
    assert "monthly_budget" in refused.context["errors"]
    assert 'aria-invalid="true"' in refused.content.decode()
    assert account_for(org_a.org).monthly_budget_cents == 200  # unchanged


@pytest.mark.parametrize("role", ["admin", "member", "viewer"])
def test_only_billing_managers_get_the_forms(org_a, role, billing_on):  # noqa: F811
    client = session_client(org_a.member(role))
    body = client.get(url("billing", org_a.org)).content.decode()
    assert "Cost so far" in body
    assert "Upgrade to" not in body and 'id="budget-form"' not in body
    forged = client.post(url("billing", org_a.org), {"monthly_budget": "1"})
    assert forged.status_code == 403
    assert client.post(url("billing_checkout", org_a.org), {"plan": "pro"}).status_code == 403
    assert billing_on.state()["checkout_sessions"] == []


def test_upgrade_and_portal_redirect_to_stripe_and_invoices_are_listed(
    org_a,
    billing_on,  # noqa: F811
):
    client = session_client(org_a.owner)
    body = client.get(url("billing", org_a.org)).content.decode()
    assert "Upgrade to Pro" in body and "Upgrade to Enterprise" in body
    assert "Invoices" in body and "No invoices yet." in body
    assert billing_on.state()["customers"] == []  # viewing the page creates no customer

    upgrade = client.post(url("billing_checkout", org_a.org), {"plan": "pro"})
    session = billing_on.state()["checkout_sessions"][0]
    assert upgrade.status_code == 302 and upgrade["Location"] == session["url"]
    assert session["client_reference_id"] == org_a.org.public_id
    portal = client.post(url("billing_portal", org_a.org))
    assert portal.status_code == 302 and "/portal/bps_" in portal["Location"]

    customer = account_for(org_a.org).stripe_customer_id
    billing_on.control("invoices", {"customer": customer, "status": "open", "amount_due": 4900})
    body = client.get(url("billing", org_a.org)).content.decode()
    assert re.search(r'id="billing-invoices">.*open</td><td>4900 usd', body, re.S)

    bad = client.post(url("billing_checkout", org_a.org), {"plan": "free"}, follow=True)
    assert "cannot be bought here" in bad.content.decode()


def test_stripe_down_is_a_message_not_a_500(org_a, billing_on, settings):  # noqa: F811
    BillingAccount.objects.create(org=org_a.org, stripe_customer_id="cus_gone")
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens there
    client = session_client(org_a.owner)
    page = client.get(url("billing", org_a.org))
    assert page.status_code == 200 and "cannot be loaded from Stripe" in page.content.decode()
    portal = client.post(url("billing_portal", org_a.org), follow=True)
    assert portal.status_code == 200 and "Stripe is unavailable" in portal.content.decode()


def test_billing_off_upgrade_says_why(org_a):
    done = session_client(org_a.owner).post(
        url("billing_checkout", org_a.org), {"plan": "pro"}, follow=True
    )
    assert "Billing is not enabled on this installation" in done.content.decode()


def test_the_banner_on_every_org_page_when_past_due_or_suspended(org_a):
    client = session_client(org_a.owner)
    assert 'id="billing-banner"' not in client.get(url("overview", org_a.org)).content.decode()
    BillingAccount.objects.create(
        org=org_a.org,
        state=BillingState.PAST_DUE,
        grace_until=timezone.now() + timedelta(days=3),
    )
    past_due = client.get(url("jobs", org_a.org)).content.decode()
    assert "Payment failed." in past_due and 'role="status" id="billing-banner"' in past_due
    BillingAccount.objects.for_org(org_a.org).update(state=BillingState.SUSPENDED)
    for name in ("overview", "endpoints", "billing"):
        body = client.get(url(name, org_a.org)).content.decode()
        assert 'role="alert" id="billing-banner"' in body, name
        assert "402 <code>billing_suspended</code>" in body and "billing page" in body
    viewer = session_client(org_a.member("viewer")).get(url("overview", org_a.org))
    assert "Ask an owner to pay" in viewer.content.decode()


def test_another_orgs_billing_is_never_shown(org_a, org_b):
    BillingEvent.objects.create(org=org_a.org, kind="budget_alert", message="A's secret alert")
    body = session_client(org_b.owner).get(url("billing", org_b.org)).content.decode()
    assert "secret alert" not in body
    assert session_client(org_b.owner).get(url("billing", org_a.org)).status_code == 404


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_billing_page_in_a_browser_draws_its_chart_and_passes_axe(
    browser, worker_env, monkeypatch, tmp_path
):
    """Chromium against uvicorn: the billing page with usage and a budget draws the uPlot
    chart (cost and budget series); it and the suspended banner have no serious/critical
    axe-core violations."""
    from tests.dashboard.browser import Steps
    from tests.dashboard.test_browser import sign_up

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's loop vs. the ORM
    steps = Steps("billing-page")
    mail_dir = (
        tmp_path / "mail"
    )  # the signup link arrives by mail (tests/dashboard/test_browser.py)
    server_env = {
        **worker_env,
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(mail_dir),
    }
    with asgi_server(server_env) as base:
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.set_default_timeout(30_000)
        org_path = sign_up(page, base, "payer@example.com", "Payer Labs", mail_dir).removeprefix(
            base
        )
        org = Organization.objects.get(name="Payer Labs")
        make_usage(make_endpoint(org, status="ready"), prompt=2_000_000, completion=100_000)

        page.goto(base + org_path + "billing/")
        page.fill("#monthly_budget", "10.00")
        page.check("#hard_cap")
        page.click("text=Save budget")
        page.wait_for_selector("text=Budget saved.")
        page.wait_for_selector("#billing-chart[data-points] canvas")
        from longtune.billing.usage import period_bounds

        start, _ = period_bounds(timezone.now())
        days_so_far = (timezone.now() - start).days + 1  # one point per UTC day of the period
        assert page.get_attribute("#billing-chart", "data-points") == str(days_so_far)
        assert "6% of the $10.00 monthly budget used; hard cap on" in page.inner_text(
            "#budget-used"
        )
        assert page.inner_text("#cost-so-far") == "$0.69"
        steps.check(page, "billing")

        BillingAccount.objects.for_org(org).update(state=BillingState.SUSPENDED)
        page.goto(base + org_path)
        assert "Billing is suspended" in page.inner_text("#billing-banner")
        steps.check(page, "suspended-banner")
    assert not steps.problems, f"axe: serious/critical violations: {steps.problems}"
