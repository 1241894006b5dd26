"""The ``local`` driver's supervision, on stand-in processes (the end-to-end test runs real
Celery workers): start the replicas, restart a dead one, ignore a recycled pid, scale down
with a warm stop, drain, destroy; a process that cannot start leaves the instance failed."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from longtune.provisioning import services
from longtune.provisioning.drivers import DriverError, local
from longtune.provisioning.models import DedicatedInstance
from longtune.provisioning.reconcile import reconcile_instance
from tests.provisioning.helpers import book

pytestmark = pytest.mark.django_db


@pytest.fixture
def standin(monkeypatch):
    """Replicas are `python -c sleep` processes naming the instance (as celery's -n does);
    SIGTERM ends them like a warm shutdown."""

    def command(instance, replica):
        return [sys.executable, "-c", "import time; time.sleep(120)", instance.public_id]

    monkeypatch.setattr(local, "worker_command", command)
    yield
    for instance in DedicatedInstance.objects.unscoped_across_orgs():
        local.LocalDriver().destroy(instance)


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def fresh(instance):
    return (
        DedicatedInstance.objects.unscoped_across_orgs()
        .select_related("capacity", "org")
        .get(pk=instance.pk)
    )


def test_supervision_restarts_scales_drains_and_destroys(org_a, standin):
    driver = local.LocalDriver()
    instance = fresh(book(org_a.org, max_replicas=2, replicas=2))
    driver.apply(instance)
    pids = driver.pids(instance)
    assert sorted(pids) == [0, 1]
    driver.apply(instance)  # idempotent: nothing new
    assert driver.pids(instance) == pids

    os.kill(pids[1], signal.SIGKILL)
    assert wait_until(lambda: 1 not in driver.pids(instance))
    driver.apply(instance)
    assert driver.pids(instance)[1] != pids[1] and driver.pids(instance)[0] == pids[0]

    # A recycled pid (another program now has it) is not mistaken for the replica.
    (local.instance_dir(instance) / "replica-0.pid").write_text(f"{os.getpid()}\n")
    assert 0 not in driver.pids(instance)
    driver.destroy(instance)
    os.kill(pids[0], signal.SIGKILL)  # the orphan the rewritten pid file hid

    driver.apply(instance)
    instance.replicas = 1
    driver.apply(instance)  # scale down: replica 1 gets SIGTERM once
    assert wait_until(lambda: sorted(driver.pids(instance)) == [0])
    driver.drain(instance)
    assert wait_until(lambda: driver.drained(instance))
    driver.destroy(instance)
    assert list(local.instance_dir(instance).glob("*.pid")) == []


def test_a_worker_that_cannot_start_fails_the_instance(org_a, monkeypatch):
    def broken(instance, replica):
        return ["/nonexistent/python", "-m", "celery"]

    monkeypatch.setattr(local, "worker_command", broken)
    instance = book(org_a.org)
    services.provision(instance, staff=None)
    assert reconcile_instance(fresh(instance), local.LocalDriver()) == "failed"
    row = fresh(instance)
    assert row.state == "failed" and "could not start a worker process" in row.failure_reason
    assert row.capacity.active is False and row.capacity.hold_while_inactive is False
    with pytest.raises(DriverError):
        local.LocalDriver().apply(row)
