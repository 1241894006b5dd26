"""Fine-tuning jobs on the generic GPU-work lifecycle (``compute.lifecycle``).

A worker is handed (job, attempt). Every write below only applies while the job is still
``running`` under THAT attempt: once the watchdog has re-queued the job (attempts + 1), a
worker that was presumed dead — but only paused — finds its writes refused and stops. The
fencing, heartbeat, progress/cancel, watchdog and lost-message re-dispatch are ``JOBS``, the
compute lifecycle bound to ``FineTuningJob``; this module adds what only jobs have
(metrics events, checkpoints, the published model) and keeps the names the worker calls.
Torch-free: the task module (workers/finetuning.py) calls these.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from longtune.compute import tasks
from longtune.compute.lifecycle import GpuWorkLifecycle, Requeue, StepControl
from longtune.compute.queues import training_queue_for
from longtune.finetuning.events import record_event
from longtune.finetuning.models import (
    EventType,
    FineTuningJob,
    JobCheckpoint,
    JobStatus,
)

__all__ = ["JOBS", "Requeue", "StepControl"]

CLAIMABLE_STATUSES = (JobStatus.VALIDATING_FILES, JobStatus.QUEUED)

JOBS: GpuWorkLifecycle[FineTuningJob] = GpuWorkLifecycle(
    model=FineTuningJob,
    task=tasks.TRAIN,
    record_event=record_event,
    label="Fine-tuning job",
    activity="training",
    waiting_statuses=CLAIMABLE_STATUSES,
    claim_related=("org", "base_model"),
    never_ran_fields={"trained_tokens": 0},
    lost_fields=lambda job: {"trained_tokens": job.progress.get("trained_tokens", 0)},
    route=training_queue_for,  # a lost worker's attempt goes where the org's work goes now
)


# --------------------------------------------------------------------------- start


def claim(job_pk: int, attempt: int, worker: str) -> FineTuningJob | None:
    """Move the job to running for this attempt; None when the message is stale."""
    return JOBS.claim(job_pk, attempt, worker)


# --------------------------------------------------------------------------- while running


def heartbeat(job_pk: int, attempt: int) -> bool:
    """True while this attempt still owns the job."""
    return JOBS.heartbeat(job_pk, attempt)


def record_progress(job_pk: int, attempt: int, progress: dict[str, Any]) -> StepControl:
    """Write progress + heartbeat for one step and read the cancel flag."""
    return JOBS.record_progress(job_pk, attempt, progress)


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


def record_epoch_checkpoint(
    job: FineTuningJob, *, step: int, epoch: int, metrics: dict[str, Any], model
) -> JobCheckpoint:
    """The checkpoint row of an epoch's end, linked to its servable model (``model``, a
    catalog ``FineTunedModel``); the step's resume state, if any, stays on the same row."""
    checkpoint, created = JobCheckpoint.objects.for_org(job.org).get_or_create(
        job=job,
        step=step,
        defaults={"org_id": job.org_id, "metrics": metrics, "storage_prefix": ""},
    )
    checkpoint.fine_tuned_model = model
    checkpoint.metrics = {**checkpoint.metrics, **metrics, "epoch": epoch}
    checkpoint.save(update_fields=["fine_tuned_model", "metrics"])
    record_event(
        job,
        f"Epoch {epoch} checkpoint {model.name} saved at step {step}.",
        data={"step": step, "epoch": epoch, "fine_tuned_model_checkpoint": model.name},
    )
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


def finish_succeeded(
    job_pk: int,
    attempt: int,
    *,
    trained_tokens: int,
    fine_tuned_model: str,
    metrics_file,
    steps: int,
) -> bool:
    return JOBS.finish(
        job_pk,
        attempt,
        JobStatus.SUCCEEDED,
        messages=[
            f"New fine-tuned model created: {fine_tuned_model}",
            "The job has successfully completed.",
        ],
        progress={"step": steps, "eta_seconds": 0},
        trained_tokens=trained_tokens,
        fine_tuned_model=fine_tuned_model,
        metrics_file=metrics_file,
    )


def finish_cancelled(job_pk: int, attempt: int, *, trained_tokens: int, step: int) -> bool:
    return JOBS.finish(
        job_pk,
        attempt,
        JobStatus.CANCELLED,
        messages=[f"Job cancelled at step {step}; checkpoint saved."],
        data={"step": step},
        trained_tokens=trained_tokens,
    )


def finish_failed(
    job_pk: int, attempt: int, *, code: str, message: str, trained_tokens: int = 0
) -> bool:
    return JOBS.finish_failed(
        job_pk, attempt, code=code, message=message, trained_tokens=trained_tokens
    )


# --------------------------------------------------------------------------- watchdog


def requeue_stale_jobs(*, stale_after: timedelta, max_attempts: int) -> list[Requeue]:
    """Running jobs whose heartbeat is older than ``stale_after``: bump ``attempts`` and hand
    them back to their queue (the caller publishes), or fail them after ``max_attempts``."""
    return JOBS.requeue_stale(stale_after=stale_after, max_attempts=max_attempts)
