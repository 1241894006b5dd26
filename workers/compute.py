"""The compute layer's periodic task: re-dispatch work whose broker message was lost."""

from __future__ import annotations

from typing import Any

from longtune.compute import tasks
from longtune.compute.sweep import redispatch_lost_work
from workers.celery_app import app


@app.task(name=tasks.REDISPATCH_SWEEP)  # task_default_queue: cpu (compute.schedule)
def redispatch_sweep() -> dict[str, Any]:
    """Every registered kind of work (fine-tuning jobs, shared servers, ...)."""
    return {"redispatched": redispatch_lost_work()}
