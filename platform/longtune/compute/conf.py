"""Compute knobs as one typed object, read from Django settings (the environment is read once,
in settings.py). The lost-message test wants a sweep that re-dispatches within seconds;
production waits minutes, so a message that is merely slow is not re-sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class ComputeConf:
    # Waiting work nobody claimed this long after its message was published, on a queue that
    # holds no message, is re-dispatched (the sweep runs every redispatch_interval_seconds).
    redispatch_after_seconds: float
    redispatch_interval_seconds: float
    finetune_watchdog_interval_seconds: float  # beat period of the fine-tuning watchdog
    inference_watchdog_interval_seconds: float  # beat period of the replica/server watchdog


def compute_conf() -> ComputeConf:
    return ComputeConf(
        redispatch_after_seconds=float(settings.COMPUTE_REDISPATCH_AFTER_SECONDS),
        redispatch_interval_seconds=float(settings.COMPUTE_REDISPATCH_INTERVAL_SECONDS),
        finetune_watchdog_interval_seconds=float(settings.FINETUNE_WATCHDOG_INTERVAL_SECONDS),
        inference_watchdog_interval_seconds=float(settings.INFERENCE_WATCHDOG_INTERVAL_SECONDS),
    )
