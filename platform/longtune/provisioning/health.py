"""Replica health from the workers' own heartbeats (``ReplicaHeartbeat`` rows).

Every worker of an instance writes its row every ``heartbeat_seconds`` (workers/provisioning.py,
on Celery's ``worker_ready``), whether it is a local process or a Kubernetes pod; a replica is
ready while its row is fresh. The supervisor promotes ``provisioning`` to ``ready`` once
``min_replicas`` are.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.utils import timezone

from longtune.provisioning.conf import provisioning_conf
from longtune.provisioning.models import DedicatedInstance, ReplicaHeartbeat
from longtune.provisioning.states import InstanceState


@dataclass(frozen=True)
class Health:
    ready: int
    expected: int
    workers: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.ready}/{self.expected}"


def _fresh_after() -> datetime.datetime:
    return timezone.now() - datetime.timedelta(seconds=provisioning_conf().heartbeat_stale_seconds)


def replica_health(instance: DedicatedInstance) -> Health:
    rows = ReplicaHeartbeat.objects.unscoped_across_orgs().filter(
        instance=instance, stopped=False, last_seen__gte=_fresh_after()
    )
    workers = tuple(sorted(rows.values_list("worker", flat=True)))
    expected = (
        instance.replicas
        if instance.state in (InstanceState.PROVISIONING, InstanceState.READY)
        else 0
    )
    return Health(ready=len(workers), expected=expected, workers=workers)


def beat(instance_public_id: str, worker: str, pid: int | None = None) -> bool:
    """A worker's heartbeat; False (stop beating) once its instance is gone or decommissioned."""
    instance = (
        DedicatedInstance.objects.unscoped_across_orgs()
        .filter(public_id=instance_public_id)
        .exclude(state=InstanceState.DECOMMISSIONED)
        .first()
    )
    if instance is None:
        return False
    ReplicaHeartbeat.objects.unscoped_across_orgs().update_or_create(
        instance=instance,
        worker=worker[:255],
        defaults={
            "org_id": instance.org_id,
            "pid": pid,
            "last_seen": timezone.now(),
            "stopped": False,
        },
    )
    return True


def stopped(instance_public_id: str, worker: str) -> None:
    """A worker shutting down (warm shutdown after a drain): no longer counted."""
    ReplicaHeartbeat.objects.unscoped_across_orgs().filter(
        instance__public_id=instance_public_id, worker=worker[:255]
    ).update(stopped=True)
