"""GET /v1/dedicated_instances: the org sees its own instances, read-only; never another's."""

from __future__ import annotations

import pytest

from longtune.provisioning import services
from tests.provisioning.helpers import book

pytestmark = pytest.mark.django_db
URL = "/v1/dedicated_instances"


def test_org_lists_and_retrieves_its_instances_read_only(org_a, org_b):
    mine = book(org_a.org, accelerator_type="h100_80gb", pool="us-east", max_replicas=2)
    services.provision(mine, staff=None)
    theirs = book(org_b.org)
    client = org_a.client("member")
    listed = client.get(URL)
    assert listed.status_code == 200
    (item,) = listed.json()["data"]
    assert item["id"] == mine.public_id and item["object"] == "dedicated_instance"
    assert (item["state"], item["size"], item["max_replicas"]) == (
        "provisioning",
        "1x_h100_80gb",
        2,
    )
    assert item["contract_end"] == "2027-12-01" and item["replicas_ready"] == 0
    assert item["instance_hours"] == "0.00" and item["hourly_price"] == "12.50"
    assert client.get(f"{URL}/{mine.public_id}").json()["queue"] == mine.queue
    assert client.get(f"{URL}/{theirs.public_id}").status_code == 404
    for method in ("post", "patch", "delete"):
        assert getattr(client, method)(f"{URL}/{mine.public_id}").status_code == 405
    assert org_a.client("owner").post(URL, {}, format="json").status_code == 405
