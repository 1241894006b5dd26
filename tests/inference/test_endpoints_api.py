"""/v1/endpoints and /v1/usage without a worker: create, lifecycle transitions, errors, rights.

(Non-transactional tests: the post-commit dispatch to the `inference` queue never fires here;
test_serving_e2e.py covers the real worker.)
"""

from __future__ import annotations

import pytest

from longtune.inference.models import Endpoint, Replica
from longtune.inference.services import (
    claim_for_replica,
    finish_replica,
    mark_ready,
    replica_heartbeat,
)
from tests.conftest import api_client
from tests.finetuning.helpers import make_base_model
from tests.inference.helpers import make_endpoint, make_usage

ENDPOINTS = "/v1/endpoints"
pytestmark = pytest.mark.django_db


@pytest.fixture
def base():
    return make_base_model("tiny-api", "/models/tiny", original=64, maximum=512)


def test_create_list_get_stop_start_delete(org_a, base):
    client = org_a.client("member")
    created = client.post(ENDPOINTS, {"model": "tiny-api"}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["id"].startswith("ep_") and body["status"] == "pending"
    assert (body["model"], body["deployment"], body["context_length"]) == ("tiny-api", "shared", 64)
    row = Endpoint.objects.for_org(org_a.org).get(public_id=body["id"])
    assert row.queue == "inference" and row.generation == 1

    url = f"{ENDPOINTS}/{body['id']}"
    assert [e["id"] for e in client.get(ENDPOINTS).json()["data"]] == [body["id"]]
    detail = client.get(url).json()
    assert detail["stats"] == {"window": 100, "requests": 0, "avg_ttft_ms": None,
                               "avg_tokens_per_second": None}  # fmt: skip

    stopped = client.post(f"{url}/stop").json()
    assert stopped["status"] == "stopped"  # pending: nothing to wait for
    restarted = client.post(f"{url}/start").json()
    assert restarted["status"] == "pending"
    assert Endpoint.objects.unscoped_across_orgs().get(pk=row.pk).generation == 2
    messages = [e["message"] for e in client.get(f"{url}/events").json()["data"]]
    assert any("Start requested (generation 2)" in m for m in messages)
    assert any(m.startswith("Endpoint created for tiny-api") for m in messages)

    assert client.delete(url).json()["deleted"] is True
    assert client.get(url).status_code == 404
    assert client.get(ENDPOINTS).json()["data"] == []
    assert (
        Endpoint.objects.unscoped_across_orgs().get(pk=row.pk).stop_requested
    )  # kept for the usage ledger


def test_dedicated_deployment_uses_the_orgs_queue(org_a, base):
    response = org_a.client().post(
        ENDPOINTS, {"model": "tiny-api", "deployment": "dedicated"}, format="json"
    )
    assert response.status_code == 201
    row = Endpoint.objects.for_org(org_a.org).get()
    assert row.queue == f"inference.{org_a.org.slug}"


def test_create_errors_and_rights(org_a, org_b, base):
    from tests.catalog.org_factories import make_fine_tuned_model

    client = org_a.client("member")
    missing = client.post(ENDPOINTS, {"model": "nope"}, format="json")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "model_not_found")
    bad = client.post(ENDPOINTS, {"model": "tiny-api", "deployment": "huge"}, format="json")
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "deployment")
    assert client.post(ENDPOINTS, {}, format="json").json()["error"]["param"] == "model"

    others_model = make_fine_tuned_model(org_b.org)
    stolen = client.post(ENDPOINTS, {"model": others_model.name}, format="json")
    assert (stolen.status_code, stolen.json()["error"]["code"]) == (404, "model_not_found")
    own = org_b.client().post(ENDPOINTS, {"model": others_model.name}, format="json")
    assert own.status_code == 201 and own.json()["context_length"] == 256

    viewer = org_a.client("viewer").post(ENDPOINTS, {"model": "tiny-api"}, format="json")
    assert (viewer.status_code, viewer.json()["error"]["code"]) == (403, "insufficient_role")
    assert not Endpoint.objects.for_org(org_a.org).exists()
    endpoint = make_endpoint(org_a.org, model=base, status="stopped")
    url = f"{ENDPOINTS}/{endpoint.public_id}"
    assert org_a.client("viewer").post(f"{url}/start").status_code == 403
    assert org_a.client("viewer").get(url).status_code == 200
    assert api_client(org_b.owner_secret).post(f"{url}/start").status_code == 404
    body = org_a.client().post(f"{url}/stop", {"force": True}, format="json")
    assert (body.status_code, body.json()["error"]["param"]) == (400, "force")


def test_replica_lifecycle_is_generation_guarded(org_a, base):
    """claim -> ready -> heartbeat -> stop; a stale generation can claim or change nothing."""
    endpoint = make_endpoint(org_a.org, model=base)
    assert claim_for_replica(endpoint.pk, generation=7, worker="w", pid=1) is None
    endpoint_row, replica = claim_for_replica(endpoint.pk, 1, "w", 1)
    assert endpoint_row.status == "loading"
    assert claim_for_replica(endpoint.pk, 1, "w2", 2) is None  # redelivered message
    assert mark_ready(replica, "http://127.0.0.1:1", {"warmup_ms": 1.0})
    assert Endpoint.objects.unscoped_across_orgs().get(pk=endpoint.pk).status == "ready"
    assert replica_heartbeat(replica)

    org_a.client().post(f"{ENDPOINTS}/{endpoint.public_id}/stop")
    assert (
        Endpoint.objects.unscoped_across_orgs().get(pk=endpoint.pk).status == "ready"
    )  # until the replica exits
    assert not replica_heartbeat(replica)
    # Started again before the old replica exited: the old one must not stop the new one.
    conflict = org_a.client().post(f"{ENDPOINTS}/{endpoint.public_id}/start")
    assert (conflict.status_code, conflict.json()["error"]["code"]) == (409, "endpoint_stopping")
    finish_replica(replica)
    assert Endpoint.objects.unscoped_across_orgs().get(pk=endpoint.pk).status == "stopped"
    assert Replica.objects.unscoped_across_orgs().get(pk=replica.pk).status == "stopped"
    org_a.client().post(f"{ENDPOINTS}/{endpoint.public_id}/start")
    finish_replica(replica, error={"code": "x", "message": "late"})  # generation 1: ignored
    assert Endpoint.objects.unscoped_across_orgs().get(pk=endpoint.pk).status == "pending"


def test_usage_grouping_and_errors(org_a, org_b, base):
    endpoint = make_endpoint(org_a.org, model=base)
    make_usage(endpoint, prompt=10, completion=5)
    make_usage(endpoint, prompt=1, completion=2)
    make_usage(make_endpoint(org_b.org, model=base), prompt=99, completion=99)
    client = org_a.client("viewer")
    records = client.get("/v1/usage").json()["data"]
    assert sorted(r["prompt_tokens"] for r in records) == [1, 10]
    (bucket,) = client.get("/v1/usage?group_by=model").json()["data"]
    assert (bucket["requests"], bucket["prompt_tokens"], bucket["total_tokens"]) == (2, 11, 18)
    for bad in ("weekday", "model,model", ","):
        response = client.get(f"/v1/usage?group_by={bad}")
        assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_group_by")
    assert client.get("/v1/usage?model=other").json()["data"] == []


def test_watchdog_restarts_an_endpoint_whose_replica_died(org_a, base):
    from datetime import timedelta

    from django.utils import timezone

    from longtune.inference.services import recover_lost_replicas

    endpoint = make_endpoint(org_a.org, model=base)
    _, replica = claim_for_replica(endpoint.pk, 1, "w", 1)
    mark_ready(replica, "http://127.0.0.1:1", {})
    assert recover_lost_replicas() == []  # heartbeating: nothing to do

    Replica.objects.unscoped_across_orgs().filter(pk=replica.pk).update(
        heartbeat_at=timezone.now() - timedelta(minutes=10)
    )
    assert recover_lost_replicas() == [endpoint.public_id]
    row = Endpoint.objects.unscoped_across_orgs().get(pk=endpoint.pk)
    assert (row.status, row.generation) == ("pending", 2)
    assert Replica.objects.unscoped_across_orgs().get(pk=replica.pk).status == "failed"
    assert row.events.filter(level="warn", message__contains="lost").exists()

    # The old replica waking up (a zombie) neither serves on nor touches the new generation.
    assert not replica_heartbeat(replica)
    finish_replica(replica)
    assert Endpoint.objects.unscoped_across_orgs().get(pk=endpoint.pk).status == "pending"
    _, fresh = claim_for_replica(endpoint.pk, 2, "w2", 2)
    assert fresh.generation == 2 and recover_lost_replicas() == []


def test_max_endpoints_quota_counts_creates_and_starts(org_a, base):
    from longtune.tenancy.models import OrgQuota

    OrgQuota.objects.create(org=org_a.org, max_endpoints=1)
    client = org_a.client()
    first = client.post(ENDPOINTS, {"model": "tiny-api"}, format="json")
    assert first.status_code == 201
    second = client.post(ENDPOINTS, {"model": "tiny-api"}, format="json")
    error = second.json()["error"]
    assert (second.status_code, error["code"], error["param"]) == (
        429, "quota_exceeded", "max_endpoints")  # fmt: skip
    assert Endpoint.objects.for_org(org_a.org).count() == 1  # nothing half-created

    first_url = f"{ENDPOINTS}/{first.json()['id']}"
    assert client.post(f"{first_url}/stop").json()["status"] == "stopped"
    replacement = client.post(ENDPOINTS, {"model": "tiny-api"}, format="json")
    assert replacement.status_code == 201  # a stopped endpoint frees its slot
    restart = client.post(f"{first_url}/start")
    assert (restart.status_code, restart.json()["error"]["param"]) == (429, "max_endpoints")
    assert (
        Endpoint.objects.unscoped_across_orgs().get(public_id=first.json()["id"]).status
        == "stopped"
    )
    usage = client.get("/v1/organization").json()
    assert usage["quotas"]["max_endpoints"] == 1 and usage["usage"]["max_endpoints"] == 1


def test_monthly_inference_tokens_quota_is_checked_before_routing(org_a, base):
    from datetime import timedelta

    from django.utils import timezone

    from longtune.inference.models import UsageRecord
    from longtune.tenancy.models import OrgQuota

    OrgQuota.objects.create(org=org_a.org, monthly_inference_tokens=100)
    endpoint = make_endpoint(org_a.org, model=base)  # no replica: a routed call would be 503
    old = make_usage(endpoint, prompt=500, completion=500)
    UsageRecord.objects.unscoped_across_orgs().filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=40)
    )
    make_usage(endpoint, prompt=60, completion=30)  # 90 this month: under the limit
    client = org_a.client("member", scopes=["inference"])
    body = {"model": "tiny-api", "messages": [{"role": "user", "content": "hi"}]}
    routed = client.post("/v1/chat/completions", body, format="json")
    assert routed.status_code == 503  # passed the quota, found no ready replica
    assert org_a.client().get("/v1/organization").json()["usage"]["monthly_inference_tokens"] == 90

    make_usage(endpoint, prompt=5, completion=5)  # 100: the month is used up
    refused = client.post("/v1/chat/completions", body, format="json")
    error = refused.json()["error"]
    assert (refused.status_code, error["code"], error["param"]) == (
        429, "quota_exceeded", "monthly_inference_tokens")  # fmt: skip
    completions = client.post(
        "/v1/completions", {"model": "tiny-api", "prompt": "x"}, format="json"
    )
    assert completions.status_code == 429
