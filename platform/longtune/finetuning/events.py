"""Writing job events (the stream ``GET /v1/fine_tuning/jobs/{id}/events`` reads newest first)."""

from __future__ import annotations

from typing import Any

from longtune.finetuning.models import EventLevel, EventType, FineTuningJob, JobEvent


def record_event(
    job: FineTuningJob,
    message: str,
    *,
    level: str = EventLevel.INFO,
    type: str = EventType.MESSAGE,
    data: dict[str, Any] | None = None,
) -> JobEvent:
    return JobEvent.objects.create(
        org_id=job.org_id, job=job, level=level, type=type, message=message, data=data
    )
