"""Soft and hard time limits for every Celery task, in one table.

Why every task has one: a worker slot held forever (a pathological upload, a wedged sweep, a
training run that never converges) silently takes capacity from every tenant. Past its soft
limit a task gets Celery's ``SoftTimeLimitExceeded`` raised inside it and fails its work with
the code ``time_limit_exceeded`` (the file is rejected, the job or evaluation fails through the
lifecycle); ``grace`` seconds later a prefork worker kills the child outright. The one
exception is serving: a replica (or shared server) task runs until its endpoint stops, and its
liveness is the inference watchdog's heartbeat check, not a clock.

``workers/celery_app.py`` turns this table into ``task_annotations``; a worker on the solo pool
(which Celery does not time) enforces the soft limit itself (``workers/time_limits.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from django.conf import settings

from longtune.compute import tasks

TIME_LIMIT_EXCEEDED = "time_limit_exceeded"  # the error code of work stopped by its soft limit


class TaskKind(StrEnum):
    SCRUB = "scrub"  # cpu: one upload, streamed once (bounded by the 32 GiB limit)
    GPU_WORK = "gpu_work"  # training and evaluation attempts
    PERIODIC = "periodic"  # watchdogs, sweeps, billing: row reads and writes
    SERVING = "serving"  # never-ending by design: no limit (see the module docstring)


TASK_KINDS: dict[str, TaskKind] = {
    tasks.PING: TaskKind.PERIODIC,
    tasks.SCRUB_FILE: TaskKind.SCRUB,
    tasks.TRAIN: TaskKind.GPU_WORK,
    tasks.EVALUATE: TaskKind.GPU_WORK,
    tasks.SERVE_ENDPOINT: TaskKind.SERVING,
    tasks.SERVE_SHARED_BASE: TaskKind.SERVING,
    tasks.FINETUNE_WATCHDOG: TaskKind.PERIODIC,
    tasks.INFERENCE_WATCHDOG: TaskKind.PERIODIC,
    tasks.EVALUATION_WATCHDOG: TaskKind.PERIODIC,
    tasks.REDISPATCH_SWEEP: TaskKind.PERIODIC,
    tasks.BILLING_SEND_METER_EVENTS: TaskKind.PERIODIC,
    tasks.BILLING_DUNNING_SWEEP: TaskKind.PERIODIC,
}


@dataclass(frozen=True)
class TimeLimit:
    soft_seconds: float  # SoftTimeLimitExceeded is raised in the task
    hard_seconds: float  # a prefork worker kills the child

    def __post_init__(self) -> None:
        if not 0 < self.soft_seconds < self.hard_seconds:
            raise ValueError("time limits need 0 < soft < hard")


def limit_for_kind(kind: TaskKind) -> TimeLimit | None:
    """The limit of one kind, from settings (None: serving, which runs until stopped)."""
    soft = {
        TaskKind.SCRUB: settings.SCRUB_TIME_LIMIT_SECONDS,
        TaskKind.GPU_WORK: settings.GPU_WORK_TIME_LIMIT_SECONDS,
        TaskKind.PERIODIC: settings.PERIODIC_TASK_TIME_LIMIT_SECONDS,
    }.get(kind)
    if soft is None:
        return None
    limit = TimeLimit(float(soft), float(soft) + float(settings.TASK_HARD_TIME_LIMIT_GRACE_SECONDS))
    if limit.hard_seconds >= settings.CELERY_VISIBILITY_TIMEOUT:
        # A message unacked this long is redelivered: the task would run twice at once.
        raise ValueError(f"the {kind.value} hard time limit must stay under the visibility timeout")
    return limit


def task_time_limits() -> dict[str, TimeLimit | None]:
    """Every task name -> its limit; a task name missing from TASK_KINDS is a bug (tested)."""
    return {name: limit_for_kind(kind) for name, kind in TASK_KINDS.items()}


def celery_annotations() -> dict[str, dict[str, float]]:
    """``task_annotations`` for the Celery app: the limits of every timed task."""
    return {
        name: {"soft_time_limit": limit.soft_seconds, "time_limit": limit.hard_seconds}
        for name, limit in task_time_limits().items()
        if limit is not None
    }


def is_time_limit(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or was caused by, a task's soft time limit.

    Why: the limit is an exception raised wherever the task happens to be, and libraries wrap
    what they catch -- botocore turns it into ``HTTPClientError`` (keeping it in
    ``kwargs["error"]``), our own loaders re-raise it as their "unavailable" errors (``from``
    it). A handler that asks this instead of matching the class sees through both, so the
    work fails with ``time_limit_exceeded`` rather than as a generic failure."""
    from celery.exceptions import SoftTimeLimitExceeded

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, SoftTimeLimitExceeded):
            return True
        wrapped = (getattr(exc, "kwargs", None) or {}).get("error")
        if isinstance(wrapped, BaseException) and is_time_limit(wrapped):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def discard_interrupted_connections() -> int:
    """Close every database connection a time limit left in the middle of a statement; return
    how many. Call it first in a handler of the limit, before the work is failed.

    Why: the soft limit is a signal, raised wherever the task is -- also while psycopg waits on
    a query's answer. That connection is then still ``ACTIVE`` (its statement sent, its result
    never read), and every later use of it fails (``can't change 'autocommit' now``), so the
    handler's own write -- failing the job -- would fail too and leave it "running" until the
    watchdog's heartbeat check. A closed connection is reopened by Django on the next query.
    Connections that are idle (or inside an ``atomic`` block the caller still owns) are left."""
    from django.db import connections
    from psycopg.pq import TransactionStatus

    closed = 0
    for connection in connections.all(initialized_only=True):
        raw = connection.connection
        if raw is None or connection.in_atomic_block or connection.vendor != "postgresql":
            continue
        if raw.info.transaction_status != TransactionStatus.IDLE:
            connection.close()
            closed += 1
    return closed
