"""Evaluation jobs on the generic GPU-work lifecycle: ``EVALUATIONS`` is
``compute.lifecycle.GpuWorkLifecycle`` bound to ``EvaluationJob`` (fencing, heartbeats,
progress with the cancel flag, watchdog re-queue, lost-message re-dispatch) -- nothing copied
from fine-tuning."""

from __future__ import annotations

from typing import Any

from longtune.compute import tasks
from longtune.compute.lifecycle import GpuWorkLifecycle
from longtune.compute.queues import training_queue_for
from longtune.evaluation.models import EvaluationEvent, EvaluationJob, EventLevel


def record_event(
    job: EvaluationJob,
    message: str,
    *,
    level: str = EventLevel.INFO,
    data: dict[str, Any] | None = None,
) -> EvaluationEvent:
    return EvaluationEvent.objects.create(
        org_id=job.org_id, evaluation=job, level=level, message=message, data=data
    )


EVALUATIONS: GpuWorkLifecycle[EvaluationJob] = GpuWorkLifecycle(
    model=EvaluationJob,
    task=tasks.EVALUATE,
    record_event=record_event,
    label="Evaluation",
    activity="evaluating",
    claim_related=("org", "base_model"),  # no nullable FK: FOR UPDATE refuses outer joins
    route=training_queue_for,  # a lost worker's attempt goes where the org's work goes now
)
