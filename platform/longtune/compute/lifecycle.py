"""The lifecycle of GPU work, for any model that inherits ``compute.models.GpuWork``.

A worker is handed (pk, attempt). Every write it makes goes through ``owned()``: it only
applies while the row is still ``running`` under THAT attempt. Once the watchdog re-queued
the work (a silent worker: attempts + 1) or the sweep re-dispatched it (a lost message:
attempts + 1), a worker or a message of the old attempt finds its writes refused and stops.

    waiting ──claim──> running ──finish──> succeeded | failed | cancelled
       ^                  │
       └─── watchdog ─────┘   (no heartbeat: re-queued with attempts + 1, resumes from its
                               checkpoint; after ``max_attempts``: failed ``worker_lost``)
    waiting ── sweep ──> waiting (attempts + 1, re-published: no worker claimed it and its
                                  queue is empty, so its message was lost)

``GpuWorkLifecycle`` is parameterized by the model, its task name and its event recorder,
so a new kind of GPU work (evaluation jobs) reuses all of it; what is specific to a kind
(fine-tuning's checkpoints, metrics events, the published model) stays in its own app on
top of this. Torch-free: the task modules in workers/ call it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, TypeVar

from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from longtune.compute import broker
from longtune.compute.models import GpuWork, WorkStatus
from longtune.events import EventLevel

logger = logging.getLogger("longtune.compute")

W = TypeVar("W", bound=GpuWork)
QueueIsIdle = Callable[[str], bool]


@dataclass(frozen=True)
class StepControl:
    owned: bool  # False: superseded by a newer attempt (or finished elsewhere): stop
    cancel: bool  # the user asked to cancel


@dataclass(frozen=True)
class Requeue:
    """An attempt handed back to its queue; the caller publishes it (``publish``)."""

    pk: int
    public_id: str
    attempt: int
    queue: str


def _nothing(row: Any) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class GpuWorkLifecycle(Generic[W]):
    """The lifecycle bound to one model (one module-level instance per kind of work, e.g.
    ``finetuning.lifecycle.JOBS``); the hooks carry what differs between kinds."""

    model: type[W]
    task: str  # the Celery task of one attempt, called with [pk, attempt]
    record_event: Callable[..., Any]  # (row, message, *, level=..., data=...)
    label: str  # "Fine-tuning job": the first start event is "<label> started on <worker>."
    activity: str = "work"  # "training": "Job cancelled before <activity> started."
    waiting_statuses: tuple[str, ...] = (WorkStatus.QUEUED,)  # claimable, swept when lost
    claim_related: tuple[str, ...] = ("org",)  # select_related of the row a claim returns
    never_ran_fields: Mapping[str, Any] = field(default_factory=dict)  # cancelled/unqueued
    lost_fields: Callable[[W], dict[str, Any]] = _nothing  # failed after max_attempts
    # Where a re-queued attempt goes: ``route(org)`` -- where the org's work goes NOW (its
    # dedicated instance may have been decommissioned meanwhile). None: back to its own queue.
    route: Callable[[Any], str] | None = None

    # ----------------------------------------------------------------------- rows

    def rows(self) -> QuerySet[W]:
        return self.model.objects.unscoped_across_orgs()  # workers address work by pk

    def owned(self, pk: int, attempt: int) -> QuerySet[W]:
        return self.rows().filter(pk=pk, attempts=attempt, status=WorkStatus.RUNNING)

    # ----------------------------------------------------------------------- publishing

    def publish(self, pk: int, attempt: int, queue: str) -> None:
        """Send attempt ``attempt`` to ``queue`` and stamp ``dispatched_at`` (the sweep's
        clock); a newer attempt's row is left alone."""
        broker.send(self.task, [pk, attempt], queue)
        self.rows().filter(pk=pk, attempts=attempt).update(dispatched_at=timezone.now())

    def dispatch(self, pk: int, *, from_status: str, queued_message: Callable[[W], str]) -> bool:
        """After the creating transaction commits: publish the first attempt, then move the
        row from ``from_status`` to queued. A broker failure must not turn into a 500 for
        work that is already saved: the row fails with ``queue_unavailable`` instead."""
        row = self.rows().get(pk=pk)
        try:
            self.publish(row.pk, row.attempts, row.queue)
        except Exception as exc:  # noqa: BLE001 - any broker error
            logger.exception("could not enqueue %s", row.public_id)
            self.rows().filter(pk=row.pk, status=from_status).update(
                status=WorkStatus.FAILED,
                error={
                    "code": "queue_unavailable",
                    "message": f"Could not enqueue the job: {type(exc).__name__}",
                    "param": None,
                },
                **self.never_ran_fields,
            )
            self.record_event(row, "The job could not be queued.", level=EventLevel.ERROR)
            return False
        moved = self.rows().filter(pk=row.pk, status=from_status).update(status=WorkStatus.QUEUED)
        if moved:
            self.record_event(row, queued_message(row))
        return True

    # ----------------------------------------------------------------------- start

    def claim(self, pk: int, attempt: int, worker: str) -> W | None:
        """Move the row to running for this attempt; None when the message is stale
        (another attempt owns it, it already runs or finished, or it no longer exists)."""
        with transaction.atomic():
            row = (
                self.rows()
                .select_for_update()
                .select_related(*self.claim_related)
                .filter(pk=pk)
                .first()
            )
            # Only waiting work can be claimed: "running" under the same attempt means
            # another delivery of this message is already on it (the watchdog re-queues
            # dead ones).
            if row is None or row.attempts != attempt or row.status not in self.waiting_statuses:
                return None
            if row.cancel_requested:
                self._finish(row, WorkStatus.CANCELLED, **self.never_ran_fields)
                self.record_event(row, f"Job cancelled before {self.activity} started.")
                return None
            now = timezone.now()
            row.status = WorkStatus.RUNNING
            row.started_at = row.started_at or now
            row.heartbeat_at = now
            row.worker = worker[:255]
            row.save(update_fields=["status", "started_at", "heartbeat_at", "worker"])
            message = (
                f"{self.label} started on {worker}."
                if attempt == 1
                else f"Attempt {attempt} started on {worker}."
            )
            self.record_event(row, message, data={"attempt": attempt, "worker": worker})
        return row

    # ----------------------------------------------------------------------- while running

    def heartbeat(self, pk: int, attempt: int) -> bool:
        """True while this attempt still owns the row."""
        return bool(self.owned(pk, attempt).update(heartbeat_at=timezone.now()))

    def record_progress(self, pk: int, attempt: int, progress: dict[str, Any]) -> StepControl:
        """Write progress + heartbeat for one step and read the cancel flag (two queries)."""
        progress = {**progress, "updated_at": time.time()}
        owned = bool(self.owned(pk, attempt).update(progress=progress, heartbeat_at=timezone.now()))
        cancel = bool(self.rows().filter(pk=pk).values_list("cancel_requested", flat=True).first())
        return StepControl(owned=owned, cancel=cancel)

    # ----------------------------------------------------------------------- end

    def _finish(self, row: W, status: str, **fields: Any) -> None:
        row.status = status
        row.finished_at = timezone.now()
        for name, value in fields.items():
            setattr(row, name, value)
        row.save(update_fields=["status", "finished_at", *fields])

    def finish(
        self,
        pk: int,
        attempt: int,
        status: str,
        *,
        messages: Sequence[str] = (),
        level: str = EventLevel.INFO,
        data: dict[str, Any] | None = None,
        progress: dict[str, Any] | None = None,
        **fields: Any,
    ) -> bool:
        """End this attempt's run with ``status`` (fields set, ``progress`` merged into the
        row's, one event per message); False when the attempt no longer owns the row."""
        with transaction.atomic():
            row = self.owned(pk, attempt).select_for_update().select_related("org").first()
            if row is None:
                return False
            if progress is not None:
                fields["progress"] = {**row.progress, **progress}
            self._finish(row, status, **fields)
            for message in messages:
                self.record_event(row, message, level=level, data=data)
        return True

    def finish_failed(self, pk: int, attempt: int, *, code: str, message: str, **fields) -> bool:
        error = {"code": code, "message": message[:1000], "param": None}
        return self.finish(
            pk,
            attempt,
            WorkStatus.FAILED,
            messages=[f"Job failed: {message[:1000]}"],
            level=EventLevel.ERROR,
            error=error,
            **fields,
        )

    # ----------------------------------------------------------------------- watchdog

    def requeue_stale(self, *, stale_after: timedelta, max_attempts: int) -> list[Requeue]:
        """Running rows whose heartbeat is older than ``stale_after``: bump ``attempts`` and
        hand them back to their queue (the caller publishes; the next attempt resumes from
        what the last one stored), or fail them ``worker_lost`` after ``max_attempts``."""
        cutoff = timezone.now() - stale_after
        requeued: list[Requeue] = []
        with transaction.atomic():
            stale = (
                self.rows()
                .select_for_update(
                    skip_locked=connection.features.has_select_for_update_skip_locked
                )
                .filter(status=WorkStatus.RUNNING, heartbeat_at__lt=cutoff)
            )
            for row in stale:
                silent = int((timezone.now() - row.heartbeat_at).total_seconds())
                if row.attempts >= max_attempts:
                    message = f"worker lost {row.attempts} times (last heartbeat {silent} s ago)"
                    self._finish(
                        row,
                        WorkStatus.FAILED,
                        error={"code": "worker_lost", "message": message, "param": None},
                        **self.lost_fields(row),
                    )
                    self.record_event(row, f"Job failed: {message}.", level=EventLevel.ERROR)
                    continue
                row.attempts += 1
                row.status = WorkStatus.QUEUED
                row.heartbeat_at = None
                row.dispatched_at = timezone.now()
                previous, row.queue = row.queue, self.route(row.org) if self.route else row.queue
                row.save(
                    update_fields=["attempts", "status", "heartbeat_at", "dispatched_at", "queue"]
                )
                moved = f" on {row.queue} (was {previous})" if row.queue != previous else ""
                self.record_event(
                    row,
                    f"Worker {row.worker or '?'} lost (no heartbeat for {silent} s); "
                    f"re-queued as attempt {row.attempts}{moved}.",
                    level=EventLevel.WARN,
                    data={"attempt": row.attempts, "queue": row.queue},
                )
                requeued.append(Requeue(row.pk, row.public_id, row.attempts, row.queue))
        return requeued

    # ----------------------------------------------------------------------- lost messages

    def _unclaimed_since(self, cutoff) -> QuerySet[W]:
        return self.rows().filter(
            Q(dispatched_at__lt=cutoff) | Q(dispatched_at__isnull=True, created_at__lt=cutoff),
            status__in=self.waiting_statuses,
        )

    def redispatch_lost(
        self, *, older_than: timedelta, queue_is_idle: QueueIsIdle
    ) -> list[Requeue]:
        """Waiting rows that no worker claimed for ``older_than`` although their queue holds
        no message: the message was lost (a broker restart without persistence, a purge, a
        web process that died between commit and publish). Bump the attempt, so the lost
        message is refused if it ever turns up, and hand it back (the caller publishes).

        A row whose queue still holds messages is left alone: its message may simply be
        waiting behind other work, and re-publishing would send it to the back of the line.
        """
        cutoff = timezone.now() - older_than
        candidate_queues = set(self._unclaimed_since(cutoff).values_list("queue", flat=True))
        idle = [queue for queue in sorted(candidate_queues) if queue_is_idle(queue)]
        requeued: list[Requeue] = []
        if not idle:
            return requeued
        with transaction.atomic():
            lost = (
                self._unclaimed_since(cutoff)
                .filter(queue__in=idle)
                .select_for_update(
                    skip_locked=connection.features.has_select_for_update_skip_locked
                )
                .order_by("pk")
            )
            for row in lost:
                since = row.dispatched_at or row.created_at
                waited = int((timezone.now() - since).total_seconds())
                row.attempts += 1
                row.status = WorkStatus.QUEUED
                row.dispatched_at = timezone.now()
                row.save(update_fields=["attempts", "status", "dispatched_at"])
                self.record_event(
                    row,
                    f"No worker picked up attempt {row.attempts - 1} in {waited} s and queue "
                    f"{row.queue} holds no message: it was lost; re-dispatched as attempt "
                    f"{row.attempts}.",
                    level=EventLevel.WARN,
                    data={"attempt": row.attempts, "queue": row.queue},
                )
                requeued.append(Requeue(row.pk, row.public_id, row.attempts, row.queue))
        return requeued

    def reroute_waiting(self, queue: str, route: Callable[[Any], str]) -> list[str]:
        """Waiting rows on ``queue`` (whose machines are gone: a decommissioned dedicated
        instance) move to ``route(org)`` as a new attempt, so the old message is refused if it
        ever turns up; queued ones are re-published there. Returns their public ids."""
        moved: list[Requeue] = []
        with transaction.atomic():
            rows = (
                self.rows()
                .select_for_update()
                .select_related("org")
                .filter(queue=queue, status__in=self.waiting_statuses)
                .order_by("pk")
            )
            for row in rows:
                target = route(row.org)
                if target == queue:
                    continue
                row.attempts += 1
                row.queue = target
                row.save(update_fields=["attempts", "queue"])
                self.record_event(
                    row,
                    f"Queue {queue} has no machines any more; moved to {target} as attempt "
                    f"{row.attempts}.",
                    level=EventLevel.WARN,
                    data={"attempt": row.attempts, "queue": target},
                )
                if row.status == WorkStatus.QUEUED:
                    moved.append(Requeue(row.pk, row.public_id, row.attempts, target))
        for item in moved:
            try:
                self.publish(item.pk, item.attempt, item.queue)
            except Exception:  # noqa: BLE001 - the lost-message sweep re-publishes it
                logger.exception("could not re-route %s", item.public_id)
        return [item.public_id for item in moved]

    def sweep_lost_messages(self, older_than: timedelta, queue_is_idle: QueueIsIdle) -> list[str]:
        """``redispatch_lost`` + publish each one (the entry ``compute.sweep`` calls)."""
        requeued = self.redispatch_lost(older_than=older_than, queue_is_idle=queue_is_idle)
        for item in requeued:
            try:
                self.publish(item.pk, item.attempt, item.queue)
            except Exception:  # noqa: BLE001 - the next sweep tries again
                logger.exception("could not re-dispatch %s", item.public_id)
                continue
            logger.warning(
                "re-dispatched %s as attempt %s on %s", item.public_id, item.attempt, item.queue
            )
        return [item.public_id for item in requeued]
