"""Worker-side state transitions of a job, each one atomic and fenced by the attempt number.

A worker is handed (job, attempt). Every write below only applies while the job is still
``running`` under THAT attempt: once the watchdog has re-queued the job (attempts + 1), a
worker that was presumed dead — but only paused — finds its writes refused and stops.
Torch-free: the task module (workers/finetuning.py) calls these.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from longtune.finetuning.events import record_event
from longtune.finetuning.models import (
    EventLevel,
    EventType,
    FineTuningJob,
    JobCheckpoint,
    JobStatus,
)

CLAIMABLE_STATUSES = (JobStatus.VALIDATING_FILES, JobStatus.QUEUED)


def _jobs():
    return FineTuningJob.objects.unscoped_across_orgs()  # workers address jobs by pk


def _owned(job_pk: int, attempt: int):
    return _jobs().filter(pk=job_pk, attempts=attempt, status=JobStatus.RUNNING)


# --------------------------------------------------------------------------- start


def claim(job_pk: int, attempt: int, worker: str) -> FineTuningJob | None:
    """Move the job to running for this attempt; None when the message is stale (another
    attempt owns the job, it already runs or finished, or it no longer exists)."""
    with transaction.atomic():
        job = (
            _jobs()
            .select_for_update()
            .select_related("org", "base_model")
            .filter(pk=job_pk)
            .first()
        )
        # Only a waiting job can be claimed: "running" under the same attempt means another
        # delivery of this message is already training it (the watchdog re-queues dead ones).
        if job is None or job.attempts != attempt or job.status not in CLAIMABLE_STATUSES:
            return None
        if job.cancel_requested:
            _finish(job, JobStatus.CANCELLED, trained_tokens=0)
            record_event(job, "Job cancelled before training started.")
            return None
        now = timezone.now()
        job.status = JobStatus.RUNNING
        job.started_at = job.started_at or now
        job.heartbeat_at = now
        job.worker = worker[:255]
        job.save(update_fields=["status", "started_at", "heartbeat_at", "worker"])
        message = (
            f"Fine-tuning job started on {worker}."
            if attempt == 1
            else f"Attempt {attempt} started on {worker}."
        )
        record_event(job, message, data={"attempt": attempt, "worker": worker})
    return job


# --------------------------------------------------------------------------- while running


def heartbeat(job_pk: int, attempt: int) -> bool:
    """True while this attempt still owns the job."""
    return bool(_owned(job_pk, attempt).update(heartbeat_at=timezone.now()))


@dataclass(frozen=True)
class StepControl:
    owned: bool  # False: superseded by a newer attempt (or finished elsewhere): stop
    cancel: bool  # the user asked to cancel


def record_progress(job_pk: int, attempt: int, progress: dict[str, Any]) -> StepControl:
    """Write progress + heartbeat for one step and read the cancel flag (two small queries)."""
    progress = {**progress, "updated_at": time.time()}
    owned = bool(_owned(job_pk, attempt).update(progress=progress, heartbeat_at=timezone.now()))
    cancel = bool(_jobs().filter(pk=job_pk).values_list("cancel_requested", flat=True).first())
    return StepControl(owned=owned, cancel=cancel)


def record_metrics_event(job: FineTuningJob, progress: dict[str, Any]) -> None:
    message = (
        f"Step {progress['step']}/{progress['total_steps']}: training loss={progress['loss']:.4f}"
    )
    if progress.get("valid_loss") is not None:
        message += f", validation loss={progress['valid_loss']:.4f}"
    record_event(job, message, type=EventType.METRICS, data=progress)


def record_checkpoint(
    job: FineTuningJob, *, step: int, metrics: dict[str, Any], storage_prefix: str, size: int
) -> JobCheckpoint:
    checkpoint, _ = JobCheckpoint.objects.for_org(job.org).update_or_create(
        job=job,
        step=step,
        defaults={
            "org_id": job.org_id,
            "metrics": metrics,
            "storage_prefix": storage_prefix,
            "bytes": size,
        },
    )
    record_event(job, f"Checkpoint saved at step {step}.", data={"step": step})
    return checkpoint


def latest_stored_checkpoint(job: FineTuningJob) -> JobCheckpoint | None:
    return (
        JobCheckpoint.objects.for_org(job.org)
        .filter(job=job)
        .exclude(storage_prefix="")
        .order_by("-step")
        .first()
    )


def forget_pruned_checkpoints(job: FineTuningJob, keep: int) -> list[str]:
    """Storage prefixes of stored checkpoints beyond the newest ``keep``; their rows stay (the
    checkpoints API keeps listing step and metrics) with the object reference cleared."""
    stored = list(
        JobCheckpoint.objects.for_org(job.org)
        .filter(job=job)
        .exclude(storage_prefix="")
        .order_by("-step")[keep:]
    )
    prefixes = [c.storage_prefix for c in stored]
    JobCheckpoint.objects.for_org(job.org).filter(pk__in=[c.pk for c in stored]).update(
        storage_prefix="", bytes=0
    )
    return prefixes


# --------------------------------------------------------------------------- end


def _finish(job: FineTuningJob, status: str, **fields: Any) -> None:
    job.status = status
    job.finished_at = timezone.now()
    for name, value in fields.items():
        setattr(job, name, value)
    job.save(update_fields=["status", "finished_at", *fields])


def _locked_if_owned(job_pk: int, attempt: int) -> FineTuningJob | None:
    return _owned(job_pk, attempt).select_for_update().select_related("org").first()


def finish_succeeded(
    job_pk: int,
    attempt: int,
    *,
    trained_tokens: int,
    fine_tuned_model: str,
    metrics_file,
    steps: int,
) -> bool:
    with transaction.atomic():
        job = _locked_if_owned(job_pk, attempt)
        if job is None:
            return False
        progress = {**job.progress, "step": steps, "eta_seconds": 0}
        _finish(
            job,
            JobStatus.SUCCEEDED,
            trained_tokens=trained_tokens,
            fine_tuned_model=fine_tuned_model,
            metrics_file=metrics_file,
            progress=progress,
        )
        record_event(job, f"New fine-tuned model created: {fine_tuned_model}")
        record_event(job, "The job has successfully completed.")
    return True


def finish_cancelled(job_pk: int, attempt: int, *, trained_tokens: int, step: int) -> bool:
    with transaction.atomic():
        job = _locked_if_owned(job_pk, attempt)
        if job is None:
            return False
        _finish(job, JobStatus.CANCELLED, trained_tokens=trained_tokens)
        record_event(job, f"Job cancelled at step {step}; checkpoint saved.", data={"step": step})
    return True


def finish_failed(
    job_pk: int, attempt: int, *, code: str, message: str, trained_tokens: int = 0
) -> bool:
    with transaction.atomic():
        job = _locked_if_owned(job_pk, attempt)
        if job is None:
            return False
        error = {"code": code, "message": message[:1000], "param": None}
        _finish(job, JobStatus.FAILED, error=error, trained_tokens=trained_tokens)
        record_event(job, f"Job failed: {message[:1000]}", level=EventLevel.ERROR)
    return True


# --------------------------------------------------------------------------- watchdog


@dataclass(frozen=True)
class Requeue:
    job_pk: int
    public_id: str
    attempt: int
    queue: str


def requeue_stale_jobs(*, stale_after: timedelta, max_attempts: int) -> list[Requeue]:
    """Running jobs whose heartbeat is older than ``stale_after``: bump ``attempts`` and hand
    them back to their queue (the caller publishes), or fail them after ``max_attempts``."""
    cutoff = timezone.now() - stale_after
    requeued: list[Requeue] = []
    with transaction.atomic():
        stale = (
            _jobs()
            .select_for_update(skip_locked=connection.features.has_select_for_update_skip_locked)
            .filter(status=JobStatus.RUNNING, heartbeat_at__lt=cutoff)
        )
        for job in stale:
            silent = int((timezone.now() - job.heartbeat_at).total_seconds())
            if job.attempts >= max_attempts:
                message = f"worker lost {job.attempts} times (last heartbeat {silent} s ago)"
                _finish(
                    job,
                    JobStatus.FAILED,
                    error={"code": "worker_lost", "message": message, "param": None},
                    trained_tokens=job.progress.get("trained_tokens", 0),
                )
                record_event(job, f"Job failed: {message}.", level=EventLevel.ERROR)
                continue
            job.attempts += 1
            job.status = JobStatus.QUEUED
            job.heartbeat_at = None
            job.save(update_fields=["attempts", "status", "heartbeat_at"])
            record_event(
                job,
                f"Worker {job.worker or '?'} lost (no heartbeat for {silent} s); "
                f"re-queued as attempt {job.attempts}.",
                level=EventLevel.WARN,
                data={"attempt": job.attempts},
            )
            requeued.append(Requeue(job.pk, job.public_id, job.attempts, job.queue))
    return requeued
