"""The soft time limit on the solo pool, which Celery does not time.

Why: the prefork pool enforces ``soft_time_limit``/``time_limit`` (compute/time_limits.py) from
its parent process; the solo pool runs the task inline in the worker's main thread and ignores
both. The training, evaluation and serving workers run solo (one slot, the task in the worker
process itself), so there the soft limit is armed here: a ``SIGALRM`` timer raises Celery's own
``SoftTimeLimitExceeded`` inside the task, which fails its work with ``time_limit_exceeded`` as on
prefork. The hard limit (killing a task stuck in C code) needs a parent process: that is the
prefork pool's job, and the cpu worker runs prefork.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from celery import signals
from celery.concurrency import get_implementation
from celery.concurrency.solo import TaskPool as SoloPool
from celery.concurrency.thread import TaskPool as ThreadPool
from celery.exceptions import SoftTimeLimitExceeded

logger = logging.getLogger("longtune.compute")

_ARMED = {"enabled": False}  # set by worker_init: True on a pool that does not time tasks


def pool_times_tasks(pool_cls: Any) -> bool:
    """False for the pools that ignore Celery's time limits (solo, threads)."""
    cls = get_implementation(pool_cls)
    return not (isinstance(cls, type) and issubclass(cls, (SoloPool, ThreadPool)))


@signals.worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    _ARMED["enabled"] = sender is not None and not pool_times_tasks(sender.pool_cls)


def _raise_soft_limit(signum: int, frame: Any) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")


@signals.task_prerun.connect
def _arm(task: Any = None, **_: Any) -> None:
    soft = getattr(task, "soft_time_limit", None)
    if (
        not (_ARMED["enabled"] and soft)
        or threading.current_thread() is not threading.main_thread()
    ):
        return
    signal.signal(signal.SIGALRM, _raise_soft_limit)
    signal.setitimer(signal.ITIMER_REAL, float(soft))


@signals.task_postrun.connect
def _disarm(**_: Any) -> None:
    if _ARMED["enabled"] and threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)
