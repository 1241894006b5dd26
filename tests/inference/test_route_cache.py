"""The gateway's route cache (inference/routing.py): a route resolved once is re-checked with
one query per request, and every way a route can end ends it at once — through a live ASGI
server (uvicorn, its own process and cache) on PostgreSQL and Redis, with real replicas (the
worker's HTTP server around the tiny engine) — and in-process where the cache is inspected.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from longtune.api.errors import ApiError
from longtune.inference import routing
from longtune.inference.models import Endpoint, Replica
from longtune.inference.services import (
    claim_for_replica,
    delete_endpoint,
    finish_replica,
    mark_ready,
    recover_lost_replicas,
    route_for,
    start_endpoint,
    stop_endpoint,
)
from longtune.tenancy.models import OrgQuota
from tests.conftest import api_client
from tests.finetuning.conftest import TINY_ORIGINAL_CONTEXT
from tests.finetuning.helpers import make_base_model
from tests.fixtures.services import asgi_server
from tests.inference.helpers import local_replica, make_endpoint

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(autouse=True)
def _empty_route_cache():
    routing.ROUTES.clear()
    yield
    routing.ROUTES.clear()


def _replica_of(endpoint: Endpoint) -> Replica:
    return Replica.objects.unscoped_across_orgs().get(
        endpoint=endpoint, generation=Endpoint.objects.unscoped_across_orgs().get(
            pk=endpoint.pk).generation
    )  # fmt: skip


def _age_heartbeat(replica: Replica, seconds: float) -> None:
    Replica.objects.unscoped_across_orgs().filter(pk=replica.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=seconds)
    )


def _ready_endpoint(org, base, url: str = "http://127.0.0.1:9") -> tuple[Endpoint, Replica]:
    """An endpoint made ready by the replica-side services (claim, ready), no process."""
    endpoint = make_endpoint(org, model=base)
    _, replica = claim_for_replica(endpoint.pk, endpoint.generation, "w", 1)
    assert mark_ready(replica, url, {})
    return endpoint, replica


def _error(response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


# --------------------------------------------------------------------------- in-process


@pytest.mark.django_db
def test_a_cached_route_costs_one_query_and_is_the_resolved_one(
    org_a, django_assert_num_queries, django_assert_max_num_queries
):
    base = make_base_model("tiny-rc")
    endpoint, replica = _ready_endpoint(org_a.org, base)
    first = route_for(org_a.org, "tiny-rc")
    assert (first.endpoint_pk, first.replica_pk, first.internal_url) == (
        endpoint.pk, replica.pk, "http://127.0.0.1:9")  # fmt: skip
    with django_assert_num_queries(1):  # the liveness re-check, nothing else
        again = route_for(org_a.org, "tiny-rc")
    assert again == first

    routing.ROUTES.clear()
    with django_assert_max_num_queries(10) as resolved:
        assert route_for(org_a.org, "tiny-rc") == first
    assert len(resolved.captured_queries) > 1  # without the cache: the catalog + the join


@pytest.mark.django_db
def test_every_route_ending_is_seen_at_once_in_process(org_a, settings):
    base = make_base_model("tiny-rc")
    endpoint, replica = _ready_endpoint(org_a.org, base)
    route_for(org_a.org, "tiny-rc")

    # Heartbeat older than the stale bound: the cached route is refused, as uncached.
    _age_heartbeat(replica, settings.INFERENCE_STALE_AFTER_SECONDS + 1)
    with pytest.raises(ApiError) as stale:
        route_for(org_a.org, "tiny-rc")
    assert (stale.value.status_code, stale.value.code) == (503, "endpoint_not_ready")
    _age_heartbeat(replica, 0)
    assert route_for(org_a.org, "tiny-rc").replica_pk == replica.pk

    # The replica exits: its endpoint is stopped.
    stop_endpoint(endpoint)
    finish_replica(replica)
    with pytest.raises(ApiError) as stopped:
        route_for(org_a.org, "tiny-rc")
    assert (stopped.value.status_code, stopped.value.code) == (404, "model_not_deployed")

    # Started again: a new generation; the old replica row can never route again.
    start_endpoint(Endpoint.objects.for_org(org_a.org).get(pk=endpoint.pk))
    _, second = claim_for_replica(endpoint.pk, 2, "w", 2)
    assert mark_ready(second, "http://127.0.0.1:10", {})
    assert route_for(org_a.org, "tiny-rc").internal_url == "http://127.0.0.1:10"

    # The watchdog declares it lost: generation 3 pending, the zombie's heartbeat ignored.
    _age_heartbeat(second, settings.INFERENCE_STALE_AFTER_SECONDS + 1)
    assert recover_lost_replicas() == [endpoint.public_id]
    _age_heartbeat(second, 0)
    with pytest.raises(ApiError) as lost:
        route_for(org_a.org, "tiny-rc")
    assert (lost.value.status_code, lost.value.code) == (503, "endpoint_not_ready")

    # Deleted while ready.
    _, third = claim_for_replica(endpoint.pk, 3, "w", 3)
    assert mark_ready(third, "http://127.0.0.1:11", {})
    assert route_for(org_a.org, "tiny-rc").replica_pk == third.pk
    delete_endpoint(Endpoint.objects.for_org(org_a.org).get(pk=endpoint.pk))
    with pytest.raises(ApiError) as deleted:
        route_for(org_a.org, "tiny-rc")
    assert (deleted.value.status_code, deleted.value.code) == (404, "model_not_deployed")
    assert routing.ROUTES.get(org_a.org, "tiny-rc") is None


@pytest.mark.django_db
def test_routes_are_per_org_and_another_orgs_route_is_never_served(org_a, org_b):
    base = make_base_model("tiny-rc")
    _, replica_a = _ready_endpoint(org_a.org, base, "http://127.0.0.1:21")
    assert route_for(org_a.org, "tiny-rc").replica_pk == replica_a.pk
    with pytest.raises(ApiError) as none_for_b:  # the public base, but no endpoint of B's
        route_for(org_b.org, "tiny-rc")
    assert (none_for_b.value.status_code, none_for_b.value.code) == (404, "model_not_deployed")

    _, replica_b = _ready_endpoint(org_b.org, base, "http://127.0.0.1:22")
    assert route_for(org_b.org, "tiny-rc").internal_url == "http://127.0.0.1:22"
    assert route_for(org_a.org, "tiny-rc").internal_url == "http://127.0.0.1:21"
    # A's cached route re-checked as B (a forged cache hit) is not live for B.
    fresh_after = routing.fresh_after(60, timezone.now())
    assert not routing.is_live(org_b.org, route_for(org_a.org, "tiny-rc"), fresh_after)


@pytest.mark.django_db
def test_route_cache_seconds_bounds_an_entry_and_zero_turns_it_off(
    org_a, settings, django_assert_num_queries
):
    base = make_base_model("tiny-rc")
    _ready_endpoint(org_a.org, base)
    settings.INFERENCE_ROUTE_CACHE_SECONDS = 0
    route_for(org_a.org, "tiny-rc")
    assert routing.ROUTES.get(org_a.org, "tiny-rc") is None
    assert len(routing.ROUTES) == 0

    cache = routing.RouteCache(max_entries=2)
    route = route_for(org_a.org, "tiny-rc")
    cache.put(org_a.org, "a", route, max_age_seconds=60)
    cache.put(org_a.org, "b", route, max_age_seconds=60)
    assert cache.get(org_a.org, "a") == route  # a is now the most recently used
    cache.put(org_a.org, "c", route, max_age_seconds=60)
    assert (cache.get(org_a.org, "b"), len(cache)) == (None, 2)  # least recently used dropped
    cache.put(org_a.org, "old", route, max_age_seconds=1e-9)
    assert cache.get(org_a.org, "old") is None  # past its bound


@pytest.mark.django_db
def test_a_replica_that_stopped_answering_is_forgotten(make_org, tiny_base_dir):
    handle = make_org("Route Gone", plan="pro")
    OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)
    base = make_base_model("tiny-gone", tiny_base_dir, original=TINY_ORIGINAL_CONTEXT, maximum=256)
    endpoint = make_endpoint(handle.org, model=base)
    client = api_client(handle.key("member", scopes=["inference"]))
    body = {"model": "tiny-gone", "messages": HELLO, "max_tokens": 2}
    with local_replica(endpoint, tiny_base_dir):
        assert client.post(CHAT, body, format="json").status_code == 200
        assert routing.ROUTES.get(handle.org, "tiny-gone") is not None
    # The process is gone but its row still looks live (no heartbeat has gone stale yet).
    response = client.post(CHAT, body, format="json")
    assert _error(response) == (503, "replica_unavailable")
    assert routing.ROUTES.get(handle.org, "tiny-gone") is None  # next request: the database


# --------------------------------------------------------------------------- live ASGI server


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_live_gateway_stops_routing_at_once_on_every_change(
    make_org, tiny_base_dir, worker_env, settings
):
    """uvicorn in its own process caches the route; each change made here (another process,
    as a worker or an API call would) is seen by its very next request."""
    handle = make_org("Route Live", plan="pro")
    OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)
    other = make_org("Route Other", plan="pro")
    base = make_base_model("tiny-live", tiny_base_dir, original=TINY_ORIGINAL_CONTEXT, maximum=256)
    endpoint = make_endpoint(handle.org, model=base)
    body = {"model": "tiny-live", "messages": HELLO, "max_tokens": 2}
    stale = settings.INFERENCE_STALE_AFTER_SECONDS + 1

    def call(http: httpx.Client, key: str) -> httpx.Response:
        return http.post(CHAT, json=body, headers={"Authorization": f"Bearer {key}"})

    key = handle.key("member", scopes=["inference"])
    other_key = other.key("member", scopes=["inference"])
    with (
        asgi_server(worker_env) as url,
        httpx.Client(base_url=url, trust_env=False, timeout=60) as http,
    ):
        with local_replica(endpoint, tiny_base_dir):
            replica = _replica_of(endpoint)
            for _ in range(2):  # resolved, then served from the server's cache
                assert call(http, key).status_code == 200
            # Another org, same public model name, no endpoint of its own.
            assert _error(call(http, other_key)) == (404, "model_not_deployed")

            _age_heartbeat(replica, stale)  # silent replica
            assert _error(call(http, key)) == (503, "endpoint_not_ready")
            _age_heartbeat(replica, 0)
            assert call(http, key).status_code == 200

            stop_endpoint(endpoint)
            finish_replica(replica)  # the replica saw the flag and exited
            assert _error(call(http, key)) == (404, "model_not_deployed")

        start_endpoint(Endpoint.objects.for_org(handle.org).get(pk=endpoint.pk))
        assert _error(call(http, key)) == (503, "endpoint_not_ready")  # generation 2 pending
        with local_replica(endpoint, tiny_base_dir):  # generation 2, a new server and URL
            second = _replica_of(endpoint)
            assert second.generation == 2 and second.internal_url != replica.internal_url
            assert call(http, key).status_code == 200  # the old server is gone: routed anew

            _age_heartbeat(second, stale)
            assert recover_lost_replicas() == [endpoint.public_id]  # watchdog: generation 3
            _age_heartbeat(second, 0)  # the zombie heartbeats on; it must not be used
            assert _error(call(http, key)) == (503, "endpoint_not_ready")

        with local_replica(endpoint, tiny_base_dir):  # generation 3
            assert call(http, key).status_code == 200
            delete_endpoint(Endpoint.objects.for_org(handle.org).get(pk=endpoint.pk))
            assert _error(call(http, key)) == (404, "model_not_deployed")
