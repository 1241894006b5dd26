"""Provisioning drivers: how an instance's workers come to exist, behind one interface.

The supervisor (``provisioning.reconcile``) calls a driver; a driver never changes an
instance's state itself. Every method is idempotent (the reconcile loop calls them again and
again), and a driver raises ``DriverError`` with a reason a person can act on, which leaves
the instance ``failed`` with that reason.

- ``local``: real ``celery worker`` processes on this machine (the embedded default);
- ``kubernetes``: one Deployment per instance through the official client.
"""

from __future__ import annotations

from typing import Protocol

from longtune.provisioning.conf import provisioning_conf
from longtune.provisioning.models import DedicatedInstance


class DriverError(Exception):
    """Provisioning failed; the message is the instance's ``failure_reason``."""


class Driver(Protocol):
    name: str

    def apply(self, instance: DedicatedInstance) -> str:
        """Make ``instance.replicas`` workers exist on the instance's queue (create, restart the
        dead, scale); returns the driver's reference (a pid dir, a Deployment name)."""

    def drain(self, instance: DedicatedInstance) -> None:
        """Stop taking new work; let running work finish, then stop (warm shutdown)."""

    def drained(self, instance: DedicatedInstance) -> bool:
        """True once no worker of the instance is left."""

    def destroy(self, instance: DedicatedInstance) -> None:
        """Remove whatever is left (after ``drained``, or for a failed instance)."""

    def running(self, instance: DedicatedInstance) -> int:
        """Workers the driver sees (processes alive / pods), health aside."""


def get_driver(name: str | None = None) -> Driver:
    name = name or provisioning_conf().driver
    if name == "local":
        from longtune.provisioning.drivers.local import LocalDriver

        return LocalDriver()
    if name == "kubernetes":
        from longtune.provisioning.drivers.kubernetes import KubernetesDriver

        return KubernetesDriver()
    raise DriverError(f"unknown provisioning driver {name!r} (local, kubernetes)")
