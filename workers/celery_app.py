"""The Celery app, configured from Django settings.

Queue names, routing, task names and the beat schedule are the compute layer's
(platform/longtune/compute/): cpu, gpu, inference, plus an org's dedicated queues
(``gpu.<org-slug>``, ``inference.<org-slug>``), which appear with their first message.

Reliability: a task is acknowledged only after it finishes (acks_late) and is re-queued if
its worker dies (reject_on_worker_lost); each worker takes one task at a time (prefetch 1)
so a long training job never hides a queued one behind it. Every task has a soft and a hard
time limit (compute/time_limits.py) except serving, which runs until its endpoint stops.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
for _p in (str(_ROOT / "platform"), str(_ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "longtune.settings")

import django  # noqa: E402
from celery import Celery  # noqa: E402
from kombu import Queue  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from longtune.compute.queues import CPU, STATIC_QUEUES  # noqa: E402
from longtune.compute.schedule import beat_schedule  # noqa: E402
from longtune.compute.time_limits import celery_annotations  # noqa: E402

app = Celery("longtune")
app.conf.update(
    broker_url=settings.CELERY_BROKER_URL,
    result_backend=settings.CELERY_RESULT_BACKEND,
    broker_transport_options={
        "visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT,
        **getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}),
    },
    result_backend_transport_options={"visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT},
    broker_connection_retry_on_startup=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue=CPU,
    task_queues=[Queue(name) for name in STATIC_QUEUES],
    task_create_missing_queues=True,  # dedicated queues appear with their first job
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_track_started=True,
    task_always_eager=settings.CELERY_TASK_ALWAYS_EAGER,
    result_expires=7 * 24 * 3600,
    worker_hijack_root_logger=False,
    # A prefork child reports "up" after worker_process_init, where a scrubbing child loads the
    # name model (spaCy + torch imports: seconds on a loaded box); Celery's default 4 s would
    # kill and respawn it forever.
    worker_proc_alive_timeout=120,
    # Soft/hard time limits of every task (compute/time_limits.py); the prefork pool enforces
    # both, workers/time_limits.py the soft one on the solo pool.
    task_annotations=celery_annotations(),
    include=[
        "workers.time_limits",
        "workers.tasks",
        "workers.compute",
        "workers.datasets",
        "workers.evaluation",
        "workers.finetuning",
        "workers.inference",
        "workers.shared_servers",
        "workers.provisioning",
        "workers.billing",
    ],
    beat_schedule=beat_schedule(),
)
