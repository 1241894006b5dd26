"""The sales console: a Sales staff user books and manages instances through confirmation
pages (each audited with them); non-staff users, org owners and staff outside Sales cannot;
Sales sees no customer file; the capacity view refuses an over-allocation."""

from __future__ import annotations

import pytest
from django.test import Client

from longtune.provisioning.models import DedicatedInstance
from longtune.provisioning.sales import SALES_PERMISSIONS
from longtune.tenancy.models import AuditLogEntry, User
from tests.provisioning.helpers import book, staff_user

pytestmark = pytest.mark.django_db
ADMIN = "/admin/provisioning/dedicatedinstance/"


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def booking(org, **fields):
    return {
        "org": org.pk, "name": "big", "accelerator_type": "h100_80gb",
        "accelerators_per_replica": 8, "min_replicas": 1, "max_replicas": 2, "replicas": 1,
        "hosts": "training", "pool": "us-east", "contract_start": "2026-12-01",
        "contract_end": "2027-12-01", "hourly_price": "98.00", **fields,
    }  # fmt: skip


def act(client, action, instances, **extra):
    body = {"action": action, "_selected_action": [i.pk for i in instances], **extra}
    return client.post(ADMIN, body)


def test_sales_books_and_runs_every_action_with_confirmation(org_a):
    sales = staff_user()
    client = logged_in(sales)
    response = client.post(f"{ADMIN}add/", booking(org_a.org))
    assert response.status_code == 302, response.content.decode()[-3000:]
    instance = DedicatedInstance.objects.for_org(org_a.org).get()
    assert (instance.size, instance.state, instance.max_replicas) == (
        "8x_h100_80gb",
        "requested",
        2,
    )

    page = act(client, "provision_action", [instance])  # the confirmation page, nothing done
    assert page.status_code == 200 and b"Yes, provision" in page.content
    instance.refresh_from_db()
    assert instance.state == "requested"
    assert act(client, "provision_action", [instance], confirm="1").status_code == 302
    instance.refresh_from_db()
    assert instance.state == "provisioning"

    act(client, "resize_action", [instance], confirm="1", min_replicas=1, replicas=2,
        max_replicas=2)  # fmt: skip
    act(client, "extend_contract_action", [instance], confirm="1", contract_end="2028-01-01")
    instance.refresh_from_db()
    assert instance.replicas == 2 and str(instance.contract_end) == "2028-01-01"
    act(client, "decommission_action", [instance], confirm="1")  # provisioning: drains first
    instance.refresh_from_db()
    assert instance.state == "draining"

    page = client.get(f"{ADMIN}{instance.pk}/change/")
    assert page.status_code == 200
    assert b"Replicas ready" in page.content and b"requested" in page.content  # history

    actions = list(
        AuditLogEntry.objects.for_org(org_a.org)
        .filter(action__startswith="dedicated_instance.")
        .values_list("action", "actor_user")
    )
    assert actions == [
        ("dedicated_instance.requested", sales.pk),
        ("dedicated_instance.provisioned", sales.pk),
        ("dedicated_instance.resized", sales.pk),
        ("dedicated_instance.contract_extended", sales.pk),
        ("dedicated_instance.draining", sales.pk),
    ]


def test_capacity_view_and_the_add_form_refuse_over_allocation(org_a, org_b):
    client = logged_in(staff_user())
    assert client.post(f"{ADMIN}add/", booking(org_a.org)).status_code == 302  # 16 of 16
    refused = client.post(f"{ADMIN}add/", booking(org_b.org, max_replicas=1))
    assert refused.status_code == 200 and b"has 0 free h100_80gb" in refused.content
    assert DedicatedInstance.objects.for_org(org_b.org).count() == 0
    page = client.get(f"{ADMIN}capacity/")
    assert page.status_code == 200
    assert (
        b"<td>us-east</td><td>h100_80gb</td><td>16</td>\n        <td>16</td><td>0</td>"
        in page.content
    )


def test_non_staff_owner_and_plain_staff_cannot(org_a):
    instance = book(org_a.org)
    plain_staff = User.objects.create_user(email="ops@longtune.example", password="x" * 20)
    plain_staff.is_staff = True
    plain_staff.save()
    for user in (org_a.owner, plain_staff):
        client = logged_in(user)
        assert client.post(f"{ADMIN}add/", booking(org_a.org)).status_code in (302, 403)
        act(client, "provision_action", [instance], confirm="1")
        assert client.get(f"{ADMIN}capacity/").status_code in (302, 403)
    instance.refresh_from_db()
    assert instance.state == "requested"
    assert DedicatedInstance.objects.for_org(org_a.org).count() == 1
    # An org owner's API key cannot create or change instances either: the API is read-only.
    api = org_a.client("owner")
    assert api.post("/v1/dedicated_instances", booking(org_a.org), format="json").status_code == 405


def test_sales_group_has_exactly_its_permissions_and_no_customer_data(org_a):
    sales = staff_user()
    granted = {tuple(p.split(".", 1)) for p in sales.get_all_permissions()}
    assert granted == set(SALES_PERMISSIONS)
    client = logged_in(sales)
    for url in ("/admin/datasets/file/", "/admin/finetuning/finetuningjob/",
                "/admin/tenancy/apikey/", "/admin/tenancy/membership/"):  # fmt: skip
        assert client.get(url).status_code in (403, 404), url  # never 200
    assert client.get(ADMIN).status_code == 200
