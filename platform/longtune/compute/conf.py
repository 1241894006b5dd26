"""Compute knobs, read from Django settings with an environment default each.

Why env-tunable: the lost-message test wants a sweep that re-dispatches within seconds;
production waits minutes, so a message that is merely slow is not re-sent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from django.conf import settings


def _setting(name: str, default: float) -> float:
    value = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(name) or default
    return float(value)


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
        redispatch_after_seconds=_setting("COMPUTE_REDISPATCH_AFTER_SECONDS", 600),
        redispatch_interval_seconds=_setting("COMPUTE_REDISPATCH_INTERVAL_SECONDS", 60),
        finetune_watchdog_interval_seconds=_setting("FINETUNE_WATCHDOG_INTERVAL_SECONDS", 30),
        inference_watchdog_interval_seconds=_setting("INFERENCE_WATCHDOG_INTERVAL_SECONDS", 30),
    )
