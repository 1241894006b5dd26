"""Shared-server bookkeeping without a worker: who rides on which server, generation guards,
idle stop, failure propagation and the watchdog. (test_shared_server_e2e.py runs the real
process.)"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from longtune.catalog.models import FineTunedModel
from longtune.inference import shared_servers
from longtune.inference.models import Endpoint, SharedServer
from longtune.inference.services import claim_for_replica, finish_replica, mark_ready
from tests.finetuning.helpers import make_base_model

ENDPOINTS = "/v1/endpoints"
pytestmark = pytest.mark.django_db


@pytest.fixture
def base():
    return make_base_model("tiny-pool", "/models/tiny", original=64, maximum=512)


def fine_tuned(org, base, method: str) -> FineTunedModel:
    return FineTunedModel.objects.create(
        org=org, name=f"ft:tiny-pool:{org.slug}:{method}", base_model=base, method=method,
        context_length=256, artifact_prefix=f"models/{org.slug}/{method}",
    )  # fmt: skip


def create(handle, model: str, **extra) -> Endpoint:
    response = handle.client().post(ENDPOINTS, {"model": model, **extra}, format="json")
    assert response.status_code == 201, response.content
    return Endpoint.objects.for_org(handle.org).get(public_id=response.json()["id"])


def test_shared_endpoints_of_one_base_ride_one_server_across_orgs(org_a, org_b, base):
    from longtune.tenancy.models import OrgQuota

    OrgQuota.objects.create(org=org_a.org, max_endpoints=10)
    lora_a = fine_tuned(org_a.org, base, "lora")
    full_a = fine_tuned(org_a.org, base, "full")
    on_base_a = create(org_a, "tiny-pool")
    on_lora_a = create(org_a, lora_a.name)
    on_base_b = create(org_b, "tiny-pool")
    (server,) = SharedServer.objects.all()
    assert (server.base_model, server.queue, server.status, server.generation) == (
        base, "inference", "pending", 1)  # fmt: skip
    for endpoint in (on_base_a, on_lora_a, on_base_b):
        assert (endpoint.hosting, endpoint.shared_server) == ("shared_server", server)
    messages = list(on_lora_a.events.values_list("message", flat=True))
    assert any(f"served by shared server {server.public_id}" in m for m in messages)

    # A full fine-tune's weights are its own base; dedicated means the org's own process.
    full = create(org_a, full_a.name)
    dedicated = create(org_b, "tiny-pool", deployment="dedicated")
    for endpoint in (full, dedicated):
        assert (endpoint.hosting, endpoint.shared_server) == ("own_process", None)
    assert dedicated.queue == f"inference.{org_b.org.slug}"
    assert SharedServer.objects.count() == 1


def test_server_claim_and_endpoint_claim_are_generation_and_server_guarded(org_a, base):
    endpoint = create(org_a, "tiny-pool")
    server = endpoint.shared_server
    assert shared_servers.claim_server(server.pk, 2, "w", 1) is None  # stale message
    claimed = shared_servers.claim_server(server.pk, 1, "w", 1)
    assert claimed is not None and claimed.status == "loading"
    assert shared_servers.claim_server(server.pk, 1, "w2", 2) is None  # redelivered
    assert shared_servers.server_ready(claimed, "http://127.0.0.1:9")
    assert shared_servers.pending_endpoints(claimed) == [(endpoint.pk, 1)]

    other = SharedServer.objects.create(base_model=make_base_model("tiny-other"), queue="x")
    assert claim_for_replica(endpoint.pk, 1, "w", 1, shared_server=other) is None
    _, replica = claim_for_replica(endpoint.pk, 1, "w", 1, shared_server=claimed)
    assert replica.shared_server == claimed
    assert shared_servers.pending_endpoints(claimed) == []


def test_idle_stop_waits_for_attached_endpoints_and_a_new_endpoint_restarts(org_a, base):
    endpoint = create(org_a, "tiny-pool")
    server = shared_servers.claim_server(endpoint.shared_server_id, 1, "w", 1)
    shared_servers.server_ready(server, "http://127.0.0.1:9")
    _, replica = claim_for_replica(endpoint.pk, 1, "w", 1, shared_server=server)
    mark_ready(replica, server.internal_url, {})
    assert not shared_servers.stop_if_idle(server)  # an endpoint is attached and ready
    assert SharedServer.objects.get().status == "ready"

    org_a.client().post(f"{ENDPOINTS}/{endpoint.public_id}/stop")
    finish_replica(replica)
    assert shared_servers.stop_if_idle(server)
    assert SharedServer.objects.get().status == "stopped"
    assert not shared_servers.server_heartbeat(server)  # the old process exits

    org_a.client().post(f"{ENDPOINTS}/{endpoint.public_id}/start")
    row = SharedServer.objects.get()
    assert (row.status, row.generation) == ("pending", 2)
    assert Endpoint.objects.unscoped_across_orgs().get(pk=endpoint.pk).shared_server == row


def test_a_server_that_cannot_start_fails_its_waiting_endpoints(org_a, org_b, base):
    first, second = create(org_a, "tiny-pool"), create(org_b, "tiny-pool")
    server = shared_servers.claim_server(first.shared_server_id, 1, "w", 1)
    shared_servers.finish_server(server, error={"code": "replica_failed", "message": "OSError: x"})
    for endpoint in (first, second):
        endpoint.refresh_from_db()
        assert endpoint.status == "failed" and endpoint.error["code"] == "replica_failed"
        event = endpoint.events.order_by("-pk").first()
        assert event.level == "error" and "OSError: x" in event.message
    assert SharedServer.objects.get().status == "failed"
    shared_servers.finish_server(server)  # a second exit of the same generation: no change
    assert SharedServer.objects.get().status == "failed"


def test_clean_shutdown_stops_waiting_endpoints(org_a, base):
    endpoint = create(org_a, "tiny-pool")
    server = shared_servers.claim_server(endpoint.shared_server_id, 1, "w", 1)
    shared_servers.finish_server(server)
    endpoint.refresh_from_db()
    assert endpoint.status == "stopped" and endpoint.error is None


def test_watchdog_restarts_a_lost_server_only_when_endpoints_wait(org_a, base, settings):
    settings.INFERENCE_STALE_AFTER_SECONDS = 60
    endpoint = create(org_a, "tiny-pool")
    server = shared_servers.claim_server(endpoint.shared_server_id, 1, "w", 1)
    assert shared_servers.recover_lost_servers() == []  # heartbeating
    old = timezone.now() - timedelta(minutes=5)
    SharedServer.objects.filter(pk=server.pk).update(heartbeat_at=old)
    assert shared_servers.recover_lost_servers() == [server.public_id]
    row = SharedServer.objects.get()
    assert (row.status, row.generation) == ("pending", 2)  # the endpoint still waits
    assert not shared_servers.server_heartbeat(server)  # the zombie cannot heartbeat on

    org_a.client().post(f"{ENDPOINTS}/{endpoint.public_id}/stop")
    again = shared_servers.claim_server(row.pk, 2, "w", 1)
    SharedServer.objects.filter(pk=again.pk).update(heartbeat_at=old)
    assert shared_servers.recover_lost_servers() == [server.public_id]
    row.refresh_from_db()
    assert (row.status, row.generation) == ("failed", 2)  # nobody waits: not restarted


def test_hosting_is_in_the_api_and_servers_are_in_the_admin(org_a, base):
    from django.test import Client

    from longtune.tenancy.models import User

    endpoint = create(org_a, "tiny-pool")
    body = org_a.client().get(f"{ENDPOINTS}/{endpoint.public_id}").json()
    assert body["hosting"] == "shared_server"
    assert "shared_server" not in body  # the platform's process is not the tenant's business

    staff = Client()
    staff.force_login(User.objects.create_superuser("ops@example.com", "staff-password-123"))
    server = endpoint.shared_server
    for url, expected in (
        ("/admin/inference/sharedserver/", server.public_id),
        (f"/admin/inference/sharedserver/{server.pk}/change/", server.public_id),
        ("/admin/inference/endpoint/?hosting=shared_server", endpoint.public_id),
    ):
        response = staff.get(url)
        assert response.status_code == 200, url
        assert expected in response.content.decode(), url
