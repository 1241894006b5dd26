"""Budget alert emails: to the members who may manage billing (owners), once per threshold per
period, after the alert commits; Django's locmem backend is the mail server."""

from __future__ import annotations

import pytest
from django.core import mail
from django.utils import timezone

from longtune.billing import dunning
from longtune.billing.emails import billing_recipients
from longtune.billing.models import BillingAccount, BillingEvent
from longtune.tenancy.models import Membership, User
from tests.conftest import TEST_PASSWORD
from tests.inference.helpers import make_endpoint, make_usage

pytestmark = pytest.mark.django_db


def add_member(org, email: str, role: str, *, active: bool = True) -> User:
    user = User.objects.create_user(email=email, password=TEST_PASSWORD, is_active=active)
    Membership.objects.create(org=org, user=user, role=role)
    return user


@pytest.fixture
def budgeted(org_a):
    """Org A with a $1.00 budget, a second owner, an admin, a member, a deactivated owner."""
    org = org_a.org
    add_member(org, "second-owner@example.com", "owner")
    add_member(org, "admin@example.com", "admin")
    add_member(org, "member@example.com", "member")
    add_member(org, "gone-owner@example.com", "owner", active=False)
    BillingAccount.objects.create(org=org, monthly_budget_cents=100, hard_cap=True)
    return org_a


def sweep(capture) -> dict:
    with capture(execute=True):
        return dunning.sweep()


def test_only_active_billing_managers_get_one_message_each(
    budgeted, django_capture_on_commit_callbacks
):
    org = budgeted.org
    assert billing_recipients(org) == sorted([budgeted.owner.email, "second-owner@example.com"])
    make_usage(make_endpoint(org, status="ready"), prompt=2_000_000, completion=0)  # $0.60
    assert sweep(django_capture_on_commit_callbacks)["alerted"] == [org.public_id]

    assert sorted(m.to[0] for m in mail.outbox) == billing_recipients(org)
    assert all(len(m.to) == 1 and not m.cc and not m.bcc for m in mail.outbox)
    message = mail.outbox[0]
    period = f"{timezone.now():%Y-%m}"
    assert message.subject == f"[LongTune] {org.name}: 50% of the {period} budget used"
    assert "$0.60, 50% of its $1.00 monthly budget" in message.body
    assert f"http://localhost:8000/o/{org.slug}/billing/" in message.body
    assert "at 100% new billable work is refused" in message.body


def test_each_threshold_is_mailed_once_per_period(budgeted, django_capture_on_commit_callbacks):
    org = budgeted.org
    endpoint = make_endpoint(org, status="ready")
    make_usage(endpoint, prompt=2_000_000, completion=0)  # 60%
    sweep(django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 2
    sweep(django_capture_on_commit_callbacks)  # still 60%: nothing new
    assert len(mail.outbox) == 2

    make_usage(endpoint, prompt=2_000_000, completion=0)  # 120%: 80 and 100 crossed at once
    sweep(django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 4
    assert {m.subject.split(": ")[1][:4] for m in mail.outbox[2:]} == {"100%"}
    assert "new fine-tune jobs and endpoint starts are refused" in mail.outbox[-1].body
    sweep(django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 4
    percents = BillingEvent.objects.for_org(org).filter(kind="budget_alert").order_by("pk")
    assert [e.data["percent"] for e in percents] == [50, 100]

    # A new period re-arms every threshold (the month rolled over).
    BillingAccount.objects.for_org(org).update(budget_alert_period="2000-01")
    sweep(django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 6


def test_the_email_waits_for_the_alert_to_commit(budgeted, django_capture_on_commit_callbacks):
    """The email waits for the alert's commit (a rolled-back alert mails nobody)."""
    make_usage(make_endpoint(budgeted.org, status="ready"), prompt=2_000_000, completion=0)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        dunning.sweep()
    assert len(callbacks) == 1 and mail.outbox == []


def test_another_orgs_budget_mails_only_its_own_owners(
    budgeted, org_b, django_capture_on_commit_callbacks
):
    BillingAccount.objects.create(org=org_b.org, monthly_budget_cents=100)
    make_usage(make_endpoint(org_b.org, status="ready"), prompt=2_000_000, completion=0)
    assert sweep(django_capture_on_commit_callbacks)["alerted"] == [org_b.org.public_id]
    assert [m.to for m in mail.outbox] == [[org_b.owner.email]]
    assert "has no hard cap" in mail.outbox[0].body
