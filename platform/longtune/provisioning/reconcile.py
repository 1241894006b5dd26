"""The supervisor: desired state (the instances' rows) vs what the driver has, one pass at a
time. ``manage.py provisioning_supervise`` runs passes forever; tests call ``reconcile_once``.

Per instance:
  provisioning  driver.apply (start/restart/scale); ready once ``min_replicas`` heartbeat
  ready         driver.apply (a dead worker is restarted: the supervision); usage recorded
  draining      driver.drain (warm shutdown), then, once drained, driver.destroy and
                decommissioned
A ``DriverError`` leaves the instance ``failed`` with its reason (and whatever the driver
made is destroyed): never a half-created instance nobody tracks.
"""

from __future__ import annotations

import logging

from longtune.events import EventLevel
from longtune.provisioning import services
from longtune.provisioning.drivers import Driver, DriverError, get_driver
from longtune.provisioning.health import replica_health
from longtune.provisioning.models import DedicatedInstance
from longtune.provisioning.states import InstanceState
from longtune.provisioning.usage import record_usage

logger = logging.getLogger("longtune.provisioning")
S = InstanceState


def _fail(instance: DedicatedInstance, driver: Driver, reason: str) -> None:
    try:
        driver.destroy(instance)
    except DriverError as exc:
        reason = f"{reason} (cleanup failed too: {exc})"
    services.transition(instance, S.FAILED, reason=reason)


def reconcile_instance(instance: DedicatedInstance, driver: Driver | None = None) -> str:
    """One step for one instance; returns its state afterwards."""
    driver = driver or get_driver(instance.driver or None)
    try:
        if instance.state in (S.PROVISIONING, S.READY):
            ref = driver.apply(instance)
            if instance.driver != driver.name or instance.driver_ref != ref:
                DedicatedInstance.objects.unscoped_across_orgs().filter(pk=instance.pk).update(
                    driver=driver.name, driver_ref=ref
                )
            health = replica_health(instance)
            if instance.state == S.PROVISIONING and health.ready >= instance.min_replicas:
                instance = services.transition(
                    instance,
                    S.READY,
                    message=f"Ready: {health} replicas heartbeating ({', '.join(health.workers)}).",
                )
            elif instance.state == S.READY:
                record_usage(instance)
        elif instance.state == S.DRAINING:
            driver.drain(instance)
            if driver.drained(instance):
                driver.destroy(instance)
                instance = services.transition(
                    instance, S.DECOMMISSIONED, message="Drained: every worker stopped."
                )
    except DriverError as exc:
        logger.warning("provisioning %s failed: %s", instance.public_id, exc)
        _fail(instance, driver, str(exc))
        return S.FAILED
    return instance.state


def reconcile_once(driver: Driver | None = None) -> dict[str, str]:
    """Every instance the supervisor has work for; one failing does not stop the others."""
    done: dict[str, str] = {}
    rows = (
        DedicatedInstance.objects.unscoped_across_orgs()
        .filter(state__in=[S.PROVISIONING, S.READY, S.DRAINING])
        .select_related("org", "capacity")
        .order_by("pk")
    )
    for instance in rows:
        try:
            done[instance.public_id] = reconcile_instance(instance, driver)
        except Exception as exc:  # noqa: BLE001 - logged and recorded; the next pass retries
            logger.exception("reconcile of %s failed", instance.public_id)
            services.record_event(instance, f"Supervisor error: {exc}", level=EventLevel.ERROR)
            done[instance.public_id] = instance.state
    return done
