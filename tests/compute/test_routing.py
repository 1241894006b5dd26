"""Routing an org's work: the shared pools, or the org's own DedicatedCapacity — and never
another org's."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from longtune.compute import queues
from longtune.compute.models import DedicatedCapacity, Hosts
from longtune.compute.queues import serving_queue_for, training_queue_for
from longtune.finetuning.models import FineTuningJob
from longtune.inference.models import Endpoint
from tests.finetuning.helpers import make_base_model, make_file

pytestmark = pytest.mark.django_db


def test_without_capacity_work_goes_to_the_shared_pools(org_a):
    org = org_a.org
    assert training_queue_for(org) == "gpu"
    assert serving_queue_for(org, "shared") == "inference"
    # A dedicated endpoint without capacity waits on the org's conventional queue (as before).
    assert serving_queue_for(org, "dedicated") == f"inference.{org.slug}"


def test_training_capacity_routes_training_only(org_a):
    org = org_a.org
    capacity = DedicatedCapacity.objects.create(org=org, hosts=Hosts.TRAINING)
    assert capacity.queue == f"gpu.{org.slug}"  # the conventional name fills a blank queue
    assert training_queue_for(org) == f"gpu.{org.slug}"
    assert serving_queue_for(org, "shared") == "inference"
    assert serving_queue_for(org, "dedicated") == f"inference.{org.slug}"


def test_capacity_hosting_both_takes_dedicated_serving_too(org_a):
    org = org_a.org
    DedicatedCapacity.objects.create(org=org, hosts=Hosts.BOTH, queue=f"gpu.{org.slug}.h200")
    assert training_queue_for(org) == f"gpu.{org.slug}.h200"
    assert serving_queue_for(org, "dedicated") == f"gpu.{org.slug}.h200"
    assert serving_queue_for(org, "shared") == "inference"  # shared stays shared


def test_inactive_capacity_sends_work_back_to_the_shared_pool(org_a):
    org = org_a.org
    capacity = DedicatedCapacity.objects.create(org=org)
    capacity.active = False
    capacity.save()
    assert training_queue_for(org) == "gpu"


def test_another_orgs_capacity_is_never_used(org_a, org_b):
    DedicatedCapacity.objects.create(org=org_a.org, hosts=Hosts.BOTH)
    assert training_queue_for(org_b.org) == "gpu"
    assert serving_queue_for(org_b.org, "dedicated") == f"inference.{org_b.org.slug}"
    # Even a row of org B pointed (around validation) at org A's queue is not followed.
    theirs = DedicatedCapacity.objects.create(org=org_b.org)
    DedicatedCapacity.objects.unscoped_across_orgs().filter(pk=theirs.pk).update(
        queue=f"gpu.{org_a.org.slug}.x"
    )
    assert training_queue_for(org_b.org) == "gpu"
    assert training_queue_for(org_a.org) == f"gpu.{org_a.org.slug}"


def test_validation_keeps_queues_in_the_orgs_namespace(org_a, org_b):
    foreign = DedicatedCapacity(org=org_b.org, queue=f"gpu.{org_a.org.slug}")
    with pytest.raises(ValidationError, match="must be named"):
        foreign.full_clean()
    with pytest.raises(ValidationError):
        DedicatedCapacity(org=org_a.org, queue="gpu").full_clean()  # the shared pool itself
    DedicatedCapacity(org=org_a.org, queue=f"inference.{org_a.org.slug}.big").full_clean()


def test_validation_refuses_two_active_capacities_for_the_same_work(org_a):
    org = org_a.org
    DedicatedCapacity.objects.create(org=org, hosts=Hosts.TRAINING)
    with pytest.raises(ValidationError, match="already has active capacity"):
        DedicatedCapacity(org=org, hosts=Hosts.BOTH, queue=f"gpu.{org.slug}.2").full_clean()
    DedicatedCapacity(org=org, hosts=Hosts.SERVING).full_clean()  # other work: fine


@pytest.mark.parametrize(
    ("queue", "slug", "belongs"),
    [
        ("gpu.acme", "acme", True),
        ("inference.acme", "acme", True),
        ("gpu.acme.h200", "acme", True),
        ("gpu.acme-labs", "acme", False),  # another org whose slug starts the same
        ("gpu.acmex", "acme", False),
        ("cpu.acme", "acme", False),
        ("gpu", "acme", False),
        ("gpu.acme", "", False),
    ],
)
def test_queue_namespace(queue, slug, belongs):
    assert queues.queue_belongs_to(queue, slug) is belongs


def test_jobs_and_endpoints_are_routed_through_compute(org_a, org_b):
    """The API paths read the routing: org A's capacity takes its job and its dedicated
    endpoint; org B's land on the shared pool and its own conventional queue."""
    DedicatedCapacity.objects.create(org=org_a.org, hosts=Hosts.BOTH)
    make_base_model("tiny-route", "/models/tiny", original=64, maximum=1024)
    for handle, queue in ((org_a, f"gpu.{org_a.org.slug}"), (org_b, "gpu")):
        file = make_file(handle.org)
        body = {"model": "tiny-route", "training_file": file.public_id, "context_length": 256}
        response = handle.client().post("/v1/fine_tuning/jobs", body, format="json")
        assert response.status_code == 201, response.content
        job = FineTuningJob.objects.for_org(handle.org).get(public_id=response.json()["id"])
        assert job.queue == queue
    for handle, queue in ((org_a, f"gpu.{org_a.org.slug}"), (org_b, f"inference.{org_b.org.slug}")):
        body = {"model": "tiny-route", "deployment": "dedicated"}
        response = handle.client().post("/v1/endpoints", body, format="json")
        assert response.status_code == 201, response.content
        assert Endpoint.objects.for_org(handle.org).get().queue == queue
