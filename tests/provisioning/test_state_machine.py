"""The state machine of a dedicated instance: legal transitions only, each one stamped, an
event, an audit entry with the staff user; routing follows the state."""

from __future__ import annotations

import datetime

import pytest
from django.core.exceptions import ValidationError

from longtune.compute.queues import serving_queue_for, training_queue_for
from longtune.provisioning import services
from longtune.provisioning.inventory import CapacityExceeded, capacity_rows, parse_inventory
from longtune.provisioning.models import InstanceUsage
from longtune.provisioning.states import TRANSITIONS, IllegalTransition, InstanceState
from longtune.provisioning.usage import record_usage
from longtune.tenancy.models import AuditLogEntry
from tests.finetuning.helpers import make_job
from tests.provisioning.helpers import book, staff_user

pytestmark = pytest.mark.django_db
S = InstanceState


def audit_actions(org):
    return list(
        AuditLogEntry.objects.for_org(org)
        .filter(action__startswith="dedicated_instance.")
        .order_by("pk")
        .values_list("action", "actor_user__email")
    )


def test_full_lifecycle_is_stamped_evented_and_audited(org_a):
    staff = staff_user()
    instance = book(org_a.org, staff)
    assert instance.state == S.REQUESTED and instance.size == "1x_cpu"
    assert instance.queue.startswith(f"gpu.{org_a.org.slug}.")
    services.provision(instance, staff=staff)
    services.transition(instance, S.READY)  # the supervisor: no staff user
    services.drain(instance, staff=staff)
    row = services.transition(instance, S.DECOMMISSIONED)
    assert row.provisioning_at <= row.ready_at <= row.draining_at <= row.decommissioned_at
    events = list(row.events.order_by("pk").values_list("from_state", "to_state", "actor"))
    assert events == [
        ("", "requested", staff.email),
        ("requested", "provisioning", staff.email),
        ("provisioning", "ready", "supervisor"),
        ("ready", "draining", staff.email),
        ("draining", "decommissioned", "supervisor"),
    ]
    assert audit_actions(org_a.org) == [
        ("dedicated_instance.requested", staff.email),
        ("dedicated_instance.provisioned", staff.email),
        ("dedicated_instance.ready", None),
        ("dedicated_instance.draining", staff.email),
        ("dedicated_instance.decommissioned", None),
    ]


@pytest.mark.parametrize("current", list(S))
def test_only_the_listed_transitions_are_allowed(org_a, current):
    instance = book(org_a.org)
    type(instance).objects.unscoped_across_orgs().filter(pk=instance.pk).update(state=current)
    for target in S:
        if target in TRANSITIONS[current]:
            continue
        with pytest.raises(IllegalTransition):
            services.transition(instance, target)
    assert type(instance).objects.unscoped_across_orgs().get(pk=instance.pk).state == current


def test_decommission_drains_running_instances_first(org_a):
    staff = staff_user()
    instance = book(org_a.org, staff)
    services.provision(instance, staff=staff)
    assert services.decommission(instance, staff=staff).state == S.DRAINING
    with pytest.raises(ValidationError, match="Already draining"):
        services.decommission(instance, staff=staff)  # would orphan the finishing workers
    idle = book(org_a.org, staff, hosts="serving")
    assert services.decommission(idle, staff=staff).state == S.DECOMMISSIONED  # nothing ran


def test_failed_keeps_its_reason_and_can_be_retried(org_a):
    staff = staff_user()
    instance = book(org_a.org, staff)
    services.provision(instance, staff=staff)
    failed = services.transition(instance, S.FAILED, reason="no nodes with h100_80gb")
    assert failed.failure_reason == "no nodes with h100_80gb" and failed.failed_at
    retried = services.provision(failed, staff=staff)
    assert retried.state == S.PROVISIONING and retried.failure_reason == ""


def test_routing_follows_the_state_without_fallback(org_a, org_b):
    """No fallback: the org's work waits on the instance's queue until it is ready, and after
    it is gone goes back to the shared pool; another org never sees it."""
    staff = staff_user()
    instance = book(org_a.org, staff, hosts="both")
    queue = instance.queue
    assert training_queue_for(org_a.org) == "gpu"  # only booked: routing unchanged
    services.provision(instance, staff=staff)
    assert training_queue_for(org_a.org) == queue  # provisioning: waits for the machines
    assert serving_queue_for(org_a.org, "dedicated") == queue
    services.transition(instance, S.READY)
    assert training_queue_for(org_a.org) == queue
    assert instance.capacity.__class__.objects.unscoped_across_orgs().get().active is True
    services.drain(instance, staff=staff)
    assert training_queue_for(org_a.org) == queue  # draining: still waits (no fallback)
    for other in (training_queue_for(org_b.org), serving_queue_for(org_b.org, "dedicated")):
        assert org_a.org.slug not in other
    services.transition(instance, S.DECOMMISSIONED)
    assert training_queue_for(org_a.org) == "gpu"


def test_routing_with_fallback_uses_the_shared_pool_until_ready(org_a):
    staff = staff_user()
    instance = book(org_a.org, staff, fallback_to_shared=True)
    services.provision(instance, staff=staff)
    assert training_queue_for(org_a.org) == "gpu"
    services.transition(instance, S.READY)
    assert training_queue_for(org_a.org) == instance.queue
    services.drain(instance, staff=staff)
    assert training_queue_for(org_a.org) == "gpu"


def test_waiting_work_is_rerouted_when_the_machines_are_gone(org_a, monkeypatch):
    """A job queued on the instance's queue while it drained is not lost at decommission: it
    moves to where routing now points, as a new attempt (the old message is refused)."""
    from longtune.compute import broker

    sent = []
    monkeypatch.setattr(broker, "send", lambda task, args, queue: sent.append((args, queue)))
    staff = staff_user()
    instance = book(org_a.org, staff)
    services.provision(instance, staff=staff)
    services.transition(instance, S.READY)
    services.drain(instance, staff=staff)
    waiting = make_job(org_a.org, status="queued", queue=instance.queue, attempts=1)
    running = make_job(org_a.org, status="running", queue=instance.queue)
    services.transition(instance, S.DECOMMISSIONED)
    waiting.refresh_from_db()
    running.refresh_from_db()
    assert (waiting.queue, waiting.attempts) == ("gpu", 2)
    assert sent == [([waiting.pk, 2], "gpu")]
    assert running.queue == instance.queue  # running work is the watchdog's, not moved
    assert any("moved to gpu" in m for m in waiting.events.values_list("message", flat=True))


def test_one_live_instance_per_kind_of_work(org_a):
    book(org_a.org)
    with pytest.raises(ValidationError, match="already has live"):
        book(org_a.org, hosts="both")
    book(org_a.org, hosts="serving")  # other work: fine


def test_capacity_refuses_to_over_allocate(org_a, org_b):
    staff = staff_user()
    first = book(org_a.org, staff, accelerator_type="h100_80gb", pool="us-east",
                 accelerators_per_replica=4, min_replicas=1, max_replicas=3)  # fmt: skip
    with pytest.raises(CapacityExceeded, match="4 free h100_80gb"):
        book(org_b.org, staff, accelerator_type="h100_80gb", pool="us-east",
             accelerators_per_replica=8)  # fmt: skip
    with pytest.raises(CapacityExceeded):  # resize beyond the pool too
        services.resize(first, staff=staff, min_replicas=1, max_replicas=5, replicas=1)
    services.resize(first, staff=staff, min_replicas=1, max_replicas=4, replicas=2)  # exactly 16
    rows = {(r.pool, r.accelerator_type): r for r in capacity_rows()}
    assert (rows["us-east", "h100_80gb"].allocated, rows["us-east", "h100_80gb"].free) == (16, 0)
    services.transition(first, S.DECOMMISSIONED)  # requested -> decommissioned frees it
    assert {(r.pool, r.accelerator_type): r for r in capacity_rows()}[
        "us-east", "h100_80gb"
    ].free == 16
    book(org_b.org, staff, accelerator_type="h100_80gb", pool="us-east", accelerators_per_replica=8)
    with pytest.raises(CapacityExceeded):  # a pool that is not in the inventory has nothing
        book(org_a.org, staff, accelerator_type="h100_80gb", pool="mars", hosts="serving")


def test_parse_inventory():
    assert parse_inventory("a:x=1,y=2; b:x=3") == {"a": {"x": 1, "y": 2}, "b": {"x": 3}}
    with pytest.raises(ValueError):
        parse_inventory("a:x=lots")


def test_extend_contract_and_resize_are_audited(org_a):
    staff = staff_user()
    instance = book(org_a.org, staff, max_replicas=2)
    with pytest.raises(ValidationError):
        services.extend_contract(instance, staff=staff, contract_end=datetime.date(2027, 1, 1))
    services.extend_contract(instance, staff=staff, contract_end=datetime.date(2028, 6, 1))
    services.resize(instance, staff=staff, min_replicas=1, max_replicas=2, replicas=2)
    entries = AuditLogEntry.objects.for_org(org_a.org).order_by("pk")
    extended, resized = entries.filter(action__in=["dedicated_instance.contract_extended",
                                                   "dedicated_instance.resized"])  # fmt: skip
    assert extended.metadata["after"] == "2028-06-01" and extended.actor_user == staff
    assert resized.metadata["after"]["replicas"] == 2


def test_instance_hours_from_ready_to_decommissioned_are_idempotent(org_a):
    from django.utils import timezone

    instance = book(org_a.org)
    services.provision(instance, staff=None)
    ready = services.transition(instance, S.READY)
    start = timezone.now().replace(minute=30, second=0, microsecond=0) - datetime.timedelta(hours=2)
    type(ready).objects.unscoped_across_orgs().filter(pk=ready.pk).update(
        ready_at=start, decommissioned_at=start + datetime.timedelta(hours=2)
    )
    ready.refresh_from_db()
    assert record_usage(ready) == 3
    assert record_usage(ready) == 1  # again: only the newest hour is rewritten, same rows
    rows = InstanceUsage.objects.for_org(org_a.org).order_by("hour_start")
    assert [str(r.hours) for r in rows] == ["0.500000", "1.000000", "0.500000"]
    assert sum(r.amount for r in rows) == pytest.approx(25.0)


def test_pending_dedicated_endpoints_are_rerouted_too(
    org_a, monkeypatch, django_capture_on_commit_callbacks
):
    from longtune.compute import broker
    from longtune.inference.models import Endpoint
    from tests.finetuning.helpers import make_base_model

    sent = []
    monkeypatch.setattr(broker, "send", lambda task, args, queue: sent.append((args, queue)))
    staff = staff_user()
    instance = book(org_a.org, staff, hosts="serving")
    assert instance.queue.startswith(f"inference.{org_a.org.slug}.")
    services.provision(instance, staff=staff)
    make_base_model("tiny-serve", "/models/tiny", original=64, maximum=1024)
    with django_capture_on_commit_callbacks(execute=True):
        body = {"model": "tiny-serve", "deployment": "dedicated"}
        assert org_a.client().post("/v1/endpoints", body, format="json").status_code == 201
    endpoint = Endpoint.objects.for_org(org_a.org).get()
    assert endpoint.queue == instance.queue  # waits for the instance's machines
    with django_capture_on_commit_callbacks(execute=True):
        services.decommission(instance, staff=staff)  # provisioning: drains first
        services.transition(instance, S.DECOMMISSIONED)  # the supervisor, once drained
    endpoint.refresh_from_db()
    assert (endpoint.queue, endpoint.generation) == (f"inference.{org_a.org.slug}", 2)
    assert sent[-1] == ([endpoint.pk, 2], f"inference.{org_a.org.slug}")


def test_drain_restarts_served_endpoints_so_the_workers_can_stop(
    org_a, monkeypatch, django_capture_on_commit_callbacks
):
    """A serving replica never finishes by itself: draining its queue starts a new generation
    (the old replica's heartbeat turns False, it exits, the warm shutdown completes), which
    waits on the queue and moves with the other waiting work at decommission."""
    from longtune.compute import broker
    from longtune.inference.models import Endpoint, Replica
    from longtune.inference.services import replica_heartbeat
    from tests.finetuning.helpers import make_base_model

    sent = []
    monkeypatch.setattr(broker, "send", lambda task, args, queue: sent.append((args, queue)))
    staff = staff_user()
    instance = book(org_a.org, staff, hosts="serving")
    services.provision(instance, staff=staff)
    services.transition(instance, S.READY)
    make_base_model("tiny-serve", "/models/tiny", original=64, maximum=1024)
    with django_capture_on_commit_callbacks(execute=True):
        body = {"model": "tiny-serve", "deployment": "dedicated"}
        assert org_a.client().post("/v1/endpoints", body, format="json").status_code == 201
    endpoint = Endpoint.objects.for_org(org_a.org).get()
    Endpoint.objects.for_org(org_a.org).filter(pk=endpoint.pk).update(status="ready")
    replica = Replica.objects.create(
        org=org_a.org, endpoint=endpoint, generation=1, status="ready", worker="w"
    )
    assert replica_heartbeat(replica) is True
    with django_capture_on_commit_callbacks(execute=True):
        services.drain(instance, staff=staff)
    endpoint.refresh_from_db()
    assert (endpoint.status, endpoint.generation, endpoint.queue) == ("pending", 2, instance.queue)
    assert replica_heartbeat(replica) is False  # the old replica exits
    with django_capture_on_commit_callbacks(execute=True):
        services.transition(instance, S.DECOMMISSIONED)
    endpoint.refresh_from_db()
    assert (endpoint.generation, endpoint.queue) == (3, f"inference.{org_a.org.slug}")
    assert sent[-1] == ([endpoint.pk, 3], f"inference.{org_a.org.slug}")
