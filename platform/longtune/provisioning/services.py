"""Every transition of a dedicated instance, in one place.

Staff actions (the sales console) and the supervisor's observations (``reconcile``) both
come through here, so each transition is checked against ``states.TRANSITIONS``, written with
its timestamp, recorded as an ``InstanceEvent`` and in the org's audit log (with the staff user
when a person did it), and followed by ``sync_capacity`` — the only code that sets the flags
routing reads on the instance's ``compute.DedicatedCapacity``.
"""

from __future__ import annotations

import datetime
import logging
import secrets
import zlib
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone

from longtune.compute import queues
from longtune.compute.models import DedicatedCapacity
from longtune.compute.sweep import drain_queue, reroute_waiting_work
from longtune.events import EventLevel
from longtune.provisioning import inventory
from longtune.provisioning.models import DedicatedInstance, InstanceEvent
from longtune.provisioning.states import HOLDING, InstanceState, check
from longtune.tenancy import audit
from longtune.tenancy.models import AuditAction, Organization, User

logger = logging.getLogger("longtune.provisioning")
S = InstanceState
SUPERVISOR = "supervisor"
TIMESTAMP = {
    S.PROVISIONING: "provisioning_at",
    S.READY: "ready_at",
    S.DRAINING: "draining_at",
    S.DECOMMISSIONED: "decommissioned_at",
    S.FAILED: "failed_at",
}
AUDIT_OF_STATE = {
    S.PROVISIONING: AuditAction.DEDICATED_INSTANCE_PROVISIONED,
    S.READY: AuditAction.DEDICATED_INSTANCE_READY,
    S.DRAINING: AuditAction.DEDICATED_INSTANCE_DRAINING,
    S.DECOMMISSIONED: AuditAction.DEDICATED_INSTANCE_DECOMMISSIONED,
    S.FAILED: AuditAction.DEDICATED_INSTANCE_FAILED,
}


def _rows():
    return DedicatedInstance.objects.unscoped_across_orgs()  # staff and the supervisor


def record_event(
    instance: DedicatedInstance,
    message: str,
    *,
    level: str = EventLevel.INFO,
    from_state: str = "",
    to_state: str = "",
    actor: str = "",
    data: dict[str, Any] | None = None,
) -> InstanceEvent:
    return InstanceEvent.objects.create(
        org_id=instance.org_id,
        instance=instance,
        level=level,
        message=message,
        from_state=from_state,
        to_state=to_state,
        actor=actor,
        data=data,
    )


def _actor_name(user: User | None) -> str:
    return user.email if user is not None else SUPERVISOR


def _audit(
    instance: DedicatedInstance,
    action: str,
    user: User | None,
    request: HttpRequest | None,
    **metadata: Any,
) -> None:
    audit.record(
        org=instance.org,
        action=action,
        target=instance,
        actor_user=user,
        request=request,
        metadata={"state": instance.state, "size": instance.size, **metadata},
    )


def sync_capacity(instance: DedicatedInstance) -> None:
    """Routing follows the state: active only when ready; while provisioning or draining the
    org's work waits on the instance's queue unless the contract allows falling back to the
    shared pool; requested/decommissioned/failed route nothing."""
    active = instance.state == S.READY
    hold = instance.state in HOLDING and not instance.fallback_to_shared
    DedicatedCapacity.objects.unscoped_across_orgs().filter(pk=instance.capacity_id).update(
        active=active, hold_while_inactive=hold
    )


def _check_no_overlap(org: Organization, hosts: str, exclude_pk: int | None = None) -> None:
    """One live instance per kind of work: routing picks one queue per kind."""
    live = (
        _rows()
        .filter(org=org, state__in=[S.REQUESTED, S.PROVISIONING, S.READY, S.DRAINING])
        .exclude(pk=exclude_pk)
    )
    overlapping = live if hosts == queues.BOTH else live.filter(hosts__in=[hosts, queues.BOTH])
    other = DedicatedCapacity.objects.unscoped_across_orgs().filter(
        Q(active=True) | Q(hold_while_inactive=True),
        org=org,
        instance__isnull=True,
        **({} if hosts == queues.BOTH else {"hosts__in": [hosts, queues.BOTH]}),
    )
    if overlapping.exists() or other.exists():
        raise ValidationError(
            "The organization already has live dedicated capacity hosting this work; "
            "decommission it first."
        )


def _validate_size(min_replicas: int, max_replicas: int, replicas: int) -> None:
    if not 1 <= min_replicas <= replicas <= max_replicas:
        raise ValidationError("Replicas must satisfy 1 <= min <= replicas <= max.")


def _lock_pool(pool: str, accelerator_type: str) -> None:
    """Serialize allocations of one (pool, type) until the transaction ends, so two bookings
    racing for the last accelerators cannot both pass the capacity check. PostgreSQL: a
    transaction-scoped advisory lock (it also covers an empty pool, which has no row to
    lock); SQLite serializes writers anyway. Plus the rows the check counts."""
    if connection.vendor == "postgresql":
        key = zlib.crc32(f"longtune.pool:{pool}:{accelerator_type}".encode())
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
    list(
        _rows()
        .select_for_update()
        .filter(pool=pool, accelerator_type=accelerator_type)
        .values_list("pk", flat=True)
    )


def request_instance(
    *,
    org: Organization,
    staff: User | None,
    accelerator_type: str,
    pool: str,
    contract_start: datetime.date,
    contract_end: datetime.date,
    accelerators_per_replica: int = 1,
    min_replicas: int = 1,
    max_replicas: int = 1,
    replicas: int | None = None,
    hosts: str = queues.TRAINING,
    hourly_price: Any = 0,
    fallback_to_shared: bool = False,
    name: str = "",
    request: HttpRequest | None = None,
) -> DedicatedInstance:
    """Sales books an instance: the accelerators are allocated now (refused when the pool
    cannot hold them) and the capacity row is created inactive (its queue is named); routing
    is unchanged until it is provisioned."""
    replicas = min_replicas if replicas is None else replicas
    _validate_size(min_replicas, max_replicas, replicas)
    if contract_end < contract_start:
        raise ValidationError("The contract cannot end before it starts.")
    with transaction.atomic():
        Organization.objects.select_for_update().filter(pk=org.pk).first()
        _lock_pool(pool, accelerator_type)
        _check_no_overlap(org, hosts)
        inventory.check_fits(pool, accelerator_type, accelerators_per_replica * max_replicas)
        capacity = DedicatedCapacity(org=org, hosts=hosts, active=False)
        capacity.queue = f"{queues.dedicated_queue_name(org.slug, hosts)}.{_suffix()}"
        capacity.full_clean()
        capacity.save()
        instance = DedicatedInstance.objects.create(
            org=org,
            capacity=capacity,
            name=name,
            accelerator_type=accelerator_type,
            accelerators_per_replica=accelerators_per_replica,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            replicas=replicas,
            hosts=hosts,
            pool=pool,
            contract_start=contract_start,
            contract_end=contract_end,
            hourly_price=hourly_price,
            fallback_to_shared=fallback_to_shared,
        )
        sync_capacity(instance)
        record_event(
            instance,
            f"Requested {instance.size} x{replicas} in {pool} (queue {capacity.queue}).",
            to_state=S.REQUESTED,
            actor=_actor_name(staff),
        )
        _audit(
            instance, AuditAction.DEDICATED_INSTANCE_REQUESTED, staff, request, queue=capacity.queue
        )
    return instance


def _suffix() -> str:
    """Each instance gets a queue of its own (``gpu.<slug>.<suffix>``): a message left on a
    decommissioned instance's queue can never reach the org's next instance."""
    return secrets.token_hex(4)


def transition(
    instance: DedicatedInstance,
    target: str,
    *,
    staff: User | None = None,
    request: HttpRequest | None = None,
    message: str = "",
    reason: str = "",
    level: str = EventLevel.INFO,
) -> DedicatedInstance:
    """Move ``instance`` to ``target`` (``IllegalTransition`` when the machine forbids it),
    stamp its time, record the event and the audit entry, and re-sync routing."""
    with transaction.atomic():
        row = _rows().select_for_update().select_related("org", "capacity").get(pk=instance.pk)
        check(row.state, target)
        previous = row.state
        row.state = target
        fields = ["state"]
        if target in TIMESTAMP:
            setattr(row, TIMESTAMP[target], timezone.now())
            fields.append(TIMESTAMP[target])
        if target == S.FAILED:
            row.failure_reason = reason[:5000]
            fields.append("failure_reason")
        elif target == S.PROVISIONING:
            row.failure_reason = ""
            fields.append("failure_reason")
        row.save(update_fields=fields)
        sync_capacity(row)
        record_event(
            row,
            message or f"{previous} -> {target}" + (f": {reason}" if reason else ""),
            level=EventLevel.ERROR if target == S.FAILED else level,
            from_state=previous,
            to_state=target,
            actor=_actor_name(staff),
        )
        _audit(row, AUDIT_OF_STATE[target], staff, request, previous=previous, reason=reason)
    if target in (S.DECOMMISSIONED, S.FAILED):
        _after_machines_gone(row)
    return row


def _after_machines_gone(instance: DedicatedInstance) -> None:
    """Work still waiting on the instance's queue is sent where routing now says (the shared
    pool, or the org's other capacity): never lost. Instance-hours are closed."""
    from longtune.provisioning.usage import record_usage

    record_usage(instance)
    moved = reroute_waiting_work(instance.capacity.queue)
    if any(moved.values()):
        record_event(instance, f"Waiting work re-routed: {moved}.", data={"rerouted": moved})


# --------------------------------------------------------------------- staff actions


def provision(
    instance: DedicatedInstance, *, staff: User, request: HttpRequest | None = None
) -> DedicatedInstance:
    """requested (or failed: a retry) -> provisioning; the supervisor's driver does the work."""
    return transition(
        instance, S.PROVISIONING, staff=staff, request=request, message="Provisioning started."
    )


def drain(
    instance: DedicatedInstance, *, staff: User, request: HttpRequest | None = None
) -> DedicatedInstance:
    """ready/provisioning -> draining: the workers stop taking work, finish what runs, stop;
    then the supervisor decommissions."""
    row = transition(
        instance,
        S.DRAINING,
        staff=staff,
        request=request,
        message="Draining: workers finish their running work, then stop.",
    )
    moved = drain_queue(row.capacity.queue)  # serving replicas never finish: restart them
    if any(moved.values()):
        record_event(row, f"Moved off the draining queue: {moved}.", data={"moved": moved})
    return row


def decommission(
    instance: DedicatedInstance, *, staff: User, request: HttpRequest | None = None
) -> DedicatedInstance:
    """Ends the instance: directly when nothing runs (requested, failed), else by draining
    first (the supervisor decommissions once the workers are gone)."""
    current = _rows().values_list("state", flat=True).get(pk=instance.pk)  # not a stale copy
    if current in (S.PROVISIONING, S.READY):
        return drain(instance, staff=staff, request=request)
    if current == S.DRAINING:
        # Its workers may still be finishing a job: the supervisor decommissions it once they
        # are gone; ending it now would orphan them.
        raise ValidationError("Already draining: it is decommissioned once its workers stop.")
    return transition(
        instance, S.DECOMMISSIONED, staff=staff, request=request, message="Decommissioned."
    )


def resize(
    instance: DedicatedInstance,
    *,
    staff: User,
    min_replicas: int,
    max_replicas: int,
    replicas: int,
    request: HttpRequest | None = None,
) -> DedicatedInstance:
    """New replica bounds (refused when the pool cannot hold the new maximum); the driver
    converges on the next reconcile."""
    _validate_size(min_replicas, max_replicas, replicas)
    with transaction.atomic():
        row = _rows().select_for_update().select_related("org").get(pk=instance.pk)
        if row.state in (S.DECOMMISSIONED, S.DRAINING):
            raise ValidationError(f"A {row.state} instance cannot be resized.")
        _lock_pool(row.pool, row.accelerator_type)
        inventory.check_fits(
            row.pool,
            row.accelerator_type,
            row.accelerators_per_replica * max_replicas,
            exclude_pk=row.pk,
        )
        before = (row.min_replicas, row.replicas, row.max_replicas)
        row.min_replicas, row.max_replicas, row.replicas = min_replicas, max_replicas, replicas
        row.save(update_fields=["min_replicas", "max_replicas", "replicas"])
        record_event(
            row,
            f"Resized: replicas {before[1]} (min {before[0]}, max {before[2]}) -> {replicas} "
            f"(min {min_replicas}, max {max_replicas}).",
            actor=_actor_name(staff),
        )
        _audit(
            row,
            AuditAction.DEDICATED_INSTANCE_RESIZED,
            staff,
            request,
            before={"min": before[0], "replicas": before[1], "max": before[2]},
            after={"min": min_replicas, "replicas": replicas, "max": max_replicas},
        )
    return row


def extend_contract(
    instance: DedicatedInstance,
    *,
    staff: User,
    contract_end: datetime.date,
    request: HttpRequest | None = None,
) -> DedicatedInstance:
    with transaction.atomic():
        row = _rows().select_for_update().select_related("org").get(pk=instance.pk)
        if contract_end <= row.contract_end:
            raise ValidationError("An extension must end after the current contract end.")
        if row.state == S.DECOMMISSIONED:
            raise ValidationError("A decommissioned instance's contract cannot be extended.")
        before = row.contract_end
        row.contract_end = contract_end
        row.save(update_fields=["contract_end"])
        record_event(
            row, f"Contract extended: {before} -> {contract_end}.", actor=_actor_name(staff)
        )
        _audit(
            row,
            AuditAction.DEDICATED_INSTANCE_CONTRACT_EXTENDED,
            staff,
            request,
            before=str(before),
            after=str(contract_end),
        )
    return row
