"""A dedicated instance's worker says it is alive: a heartbeat row every few seconds.

Only in workers started for an instance (``LONGTUNE_DEDICATED_INSTANCE`` is set by the local
driver and in the Kubernetes Deployment): on Celery's ``worker_ready`` a background thread
starts writing ``provisioning.ReplicaHeartbeat``; on shutdown the row is marked stopped. The
supervisor counts fresh rows as ready replicas, whatever ran the process.
"""

from __future__ import annotations

import os
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from longtune.provisioning import health
from longtune.provisioning.conf import provisioning_conf
from longtune.provisioning.drivers.local import INSTANCE_ENV
from workers.heartbeat import BackgroundHeartbeat

_running: dict[str, Any] = {}


@worker_ready.connect
def start_instance_heartbeat(sender: Any = None, **kwargs: Any) -> None:
    instance = os.environ.get(INSTANCE_ENV)
    if not instance:
        return
    name, pid = str(getattr(sender, "hostname", "") or f"pid-{os.getpid()}"), os.getpid()
    health.beat(instance, name, pid)
    beat = BackgroundHeartbeat(
        lambda: health.beat(instance, name, pid),
        every_seconds=provisioning_conf().heartbeat_seconds,
        name="instance-heartbeat",
    )
    beat.__enter__()
    _running.update(beat=beat, instance=instance, name=name)


@worker_shutdown.connect
def stop_instance_heartbeat(**kwargs: Any) -> None:
    beat = _running.pop("beat", None)
    if beat is None:
        return
    beat.__exit__(None, None, None)
    health.stopped(_running["instance"], _running["name"])
