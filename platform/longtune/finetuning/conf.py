"""Fine-tuning knobs, read from Django settings with an environment default each.

Why env-tunable: the crash-recovery tests need a watchdog that notices a dead worker within
seconds, production wants minutes; the same code runs both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from longtune.config import env_int


def _setting(name: str, default: int) -> int:
    return int(getattr(settings, name, env_int(name, default)))


@dataclass(frozen=True)
class FinetuneConf:
    heartbeat_seconds: int  # background heartbeat period while a job trains
    stale_after_seconds: int  # watchdog: a running job silent this long is re-queued
    max_attempts: int  # watchdog gives up (job failed) after this many attempts
    checkpoint_every_steps: int  # periodic checkpoint interval (uploaded to object storage)
    metrics_event_seconds: int  # at most one metrics event per this many seconds (plus last step)
    eval_every_steps: int  # validation-loss interval for jobs with a validation_file (+ the end)
    # The watchdog's beat period is FINETUNE_WATCHDOG_INTERVAL_SECONDS (compute.schedule).

    @property
    def work_dir(self) -> Path:
        """Per-worker scratch space; each job trains in work_dir/<job-id>/."""
        return Path(getattr(settings, "FINETUNE_WORK_DIR", "") or settings.VAR_DIR / "jobs")


def finetune_conf() -> FinetuneConf:
    return FinetuneConf(
        heartbeat_seconds=_setting("FINETUNE_HEARTBEAT_SECONDS", 10),
        stale_after_seconds=_setting("FINETUNE_STALE_AFTER_SECONDS", 180),
        max_attempts=_setting("FINETUNE_MAX_ATTEMPTS", 3),
        checkpoint_every_steps=_setting("FINETUNE_CHECKPOINT_EVERY_STEPS", 50),
        metrics_event_seconds=_setting("FINETUNE_METRICS_EVENT_SECONDS", 5),
        eval_every_steps=_setting("FINETUNE_EVAL_EVERY_STEPS", 50),
    )
