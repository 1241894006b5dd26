"""Time limits on the solo pool, which Celery does not time: the soft one and the hard one.

Why: the prefork pool enforces ``soft_time_limit``/``time_limit`` (compute/time_limits.py) from
its parent process; the solo pool runs the task inline in the worker's main thread and ignores
both. The training, evaluation and serving workers run solo (one slot, the task in the worker
process itself), so there both limits are enforced here:

- **soft**: a ``SIGALRM`` timer raises Celery's own ``SoftTimeLimitExceeded`` inside the task,
  which fails its work with ``time_limit_exceeded`` as on prefork.
- **hard**: a task that swallows that exception (a library catching ``Exception``), blocks the
  signal, or sits in C code never stops by itself, and its heartbeat thread keeps its work
  looking alive. A watchdog thread wakes at the hard limit, fails the work through the task's
  own ``on_failure`` hook with Celery's ``TimeLimitExceeded`` -- the call the prefork pool makes
  from its parent after killing a child, so each task has one hard-limit path on both pools
  (the file is rejected, the job or evaluation fails through its lifecycle with
  ``time_limit_exceeded``) -- and then ends the worker process with ``HARD_LIMIT_EXIT_CODE``;
  its supervisor starts a fresh one (``scripts/supervise.sh`` in scripts/run.sh, a restart
  policy elsewhere). The work is terminal by then, so a redelivered message finds nothing to
  claim and the lifecycle's watchdog has nothing to re-queue.
- **backstop**: C code that holds the GIL would starve that thread too, so faulthandler's
  C-level timer (no GIL needed) ends the process ``BACKSTOP_SECONDS`` later, with every
  thread's traceback in the log. Its work then is still "running" with a silent heartbeat:
  the lifecycle's watchdog re-queues it, at most ``FINETUNE_MAX_ATTEMPTS`` times in all, then
  fails it ``worker_lost``.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
from typing import Any

from celery import signals
from celery.concurrency import get_implementation
from celery.concurrency.solo import TaskPool as SoloPool
from celery.concurrency.thread import TaskPool as ThreadPool
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

logger = logging.getLogger("longtune.compute")

_ARMED = {"enabled": False}  # set by worker_init: True on a pool that does not time tasks
# The exit status of a worker process ended by a task's hard time limit (EX_SOFTWARE).
HARD_LIMIT_EXIT_CODE = 70
# After the hard limit, how long the watchdog thread gets before faulthandler ends the process.
BACKSTOP_SECONDS = 30.0


def pool_times_tasks(pool_cls: Any) -> bool:
    """False for the pools that ignore Celery's time limits (solo, threads)."""
    cls = get_implementation(pool_cls)
    return not (isinstance(cls, type) and issubclass(cls, (SoloPool, ThreadPool)))


@signals.worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    _ARMED["enabled"] = sender is not None and not pool_times_tasks(sender.pool_cls)


def _raise_soft_limit(signum: int, frame: Any) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")


class HardLimitWatchdog(threading.Thread):
    """Waits ``seconds`` for the task to finish; past that, fails its work and ends the process."""

    def __init__(self, task: Any, task_id: str, args: tuple, kwargs: dict, seconds: float):
        super().__init__(name=f"hard-time-limit-{task_id}", daemon=True)
        self.task, self.task_id, self.args, self.kwargs = task, task_id, args, kwargs
        self.seconds = seconds
        self.finished = threading.Event()

    def run(self) -> None:
        if self.finished.wait(self.seconds):
            return
        logger.error(
            "task %s[%s] ran past its hard time limit of %.0f s on a pool that cannot kill it: "
            "failing its work and ending this worker process (pid %d) for its supervisor to restart",
            self.task.name,
            self.task_id,
            self.seconds,
            os.getpid(),
        )
        try:
            exc = TimeLimitExceeded(self.seconds)
            self.task.on_failure(exc, self.task_id, self.args, self.kwargs, None)
        except Exception:  # the process ends either way; the lifecycle's watchdog is the rest
            logger.exception("could not fail the work of %s[%s]", self.task.name, self.task_id)
        finally:
            _close_db_connections()
            for handler in logging.getLogger().handlers:
                handler.flush()
            if not self.finished.is_set():  # the task did not finish while its work was failed
                os._exit(HARD_LIMIT_EXIT_CODE)


def _close_db_connections() -> None:
    try:
        from django.db import connections

        connections.close_all()
    except Exception:  # noqa: BLE001 - best effort on the way out
        pass


def _backstop_file() -> Any:
    """The process's real stderr for faulthandler (Celery replaces sys.stderr with a logging
    proxy that has no file descriptor); None when there is none (then no backstop)."""
    stream = sys.__stderr__
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return stream


_WATCHDOG: dict[str, HardLimitWatchdog] = {}  # the main thread's running task, if timed


@signals.task_prerun.connect
def _arm(
    task: Any = None, task_id: str = "", args: tuple = (), kwargs: dict | None = None, **_: Any
) -> None:
    if not _ARMED["enabled"] or threading.current_thread() is not threading.main_thread():
        return
    soft = getattr(task, "soft_time_limit", None)
    if soft:
        signal.signal(signal.SIGALRM, _raise_soft_limit)
        signal.setitimer(signal.ITIMER_REAL, float(soft))
    hard = getattr(task, "time_limit", None)
    if hard:
        watchdog = HardLimitWatchdog(task, task_id, tuple(args or ()), dict(kwargs or {}), hard)
        _WATCHDOG["current"] = watchdog
        watchdog.start()
        backstop = _backstop_file()
        if backstop is not None:
            faulthandler.dump_traceback_later(
                float(hard) + BACKSTOP_SECONDS, exit=True, file=backstop
            )


@signals.task_postrun.connect
def _disarm(**_: Any) -> None:
    if _ARMED["enabled"] and threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)
        watchdog = _WATCHDOG.pop("current", None)
        if watchdog is not None:
            faulthandler.cancel_dump_traceback_later()
            watchdog.finished.set()
