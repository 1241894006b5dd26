"""Fine-tuning knobs as one typed object, read from Django settings.

The environment is read once, in settings.py (``FINETUNE_*``); this module only gives the
values names and types, so tests can override a knob with pytest-django's ``settings``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings


@dataclass(frozen=True)
class FinetuneConf:
    heartbeat_seconds: int  # background heartbeat period while a job trains
    stale_after_seconds: int  # watchdog: a running job silent this long is re-queued
    max_attempts: int  # watchdog gives up (job failed) after this many attempts
    checkpoint_every_steps: int  # periodic checkpoint interval (uploaded to object storage)
    metrics_event_seconds: int  # at most one metrics event per this many seconds (plus last step)
    eval_every_steps: int  # validation-loss interval for jobs with a validation_file (+ the end)
    shared_accelerator: str  # memory planning: the shared pool's accelerator (catalogue name)
    shared_accelerators_per_job: int  # ... and how many of them one job may use
    cpu_memory_bytes: int  # RAM one CPU training process (one rank) may fill ("cpu")
    # Training processes (gloo ranks) a CPU worker may start for one job; GPU workers start
    # one per visible device (workers.finetuning.worker_world_size).
    local_world_size: int
    # The watchdog's beat period is FINETUNE_WATCHDOG_INTERVAL_SECONDS (compute.schedule).

    @property
    def work_dir(self) -> Path:
        """Per-worker scratch space; each job trains in work_dir/<job-id>/."""
        return Path(settings.FINETUNE_WORK_DIR or settings.VAR_DIR / "jobs")


def finetune_conf() -> FinetuneConf:
    return FinetuneConf(
        heartbeat_seconds=int(settings.FINETUNE_HEARTBEAT_SECONDS),
        stale_after_seconds=int(settings.FINETUNE_STALE_AFTER_SECONDS),
        max_attempts=int(settings.FINETUNE_MAX_ATTEMPTS),
        checkpoint_every_steps=int(settings.FINETUNE_CHECKPOINT_EVERY_STEPS),
        metrics_event_seconds=int(settings.FINETUNE_METRICS_EVENT_SECONDS),
        eval_every_steps=int(settings.FINETUNE_EVAL_EVERY_STEPS),
        shared_accelerator=str(settings.FINETUNE_SHARED_ACCELERATOR),
        shared_accelerators_per_job=int(settings.FINETUNE_SHARED_ACCELERATORS_PER_JOB),
        cpu_memory_bytes=int(settings.FINETUNE_CPU_MEMORY_MB) * 1024 * 1024,
        local_world_size=int(settings.FINETUNE_LOCAL_WORLD_SIZE),
    )
