"""Inference knobs, from Django settings with an environment default each.

Why env-tunable: tests want a replica that heartbeats every second and notices a stop at
once; production wants fewer writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from longtune.config import env_int


def _setting(name: str, default: int) -> int:
    return int(getattr(settings, name, env_int(name, default)))


@dataclass(frozen=True)
class InferenceConf:
    heartbeat_seconds: int  # replica heartbeat + stop-flag poll period
    stale_after_seconds: int  # a replica silent this long is not routed to
    request_timeout_seconds: int  # gateway -> replica read timeout (between chunks)
    default_max_tokens: int  # completion budget when the request gives none
    stats_window: int  # GET /v1/endpoints/{id} averages TTFT / tokens/s over this many requests
    shared_idle_seconds: int  # a shared server with no endpoint this long stops (frees its slot)

    @property
    def work_dir(self) -> Path:
        """Where a replica downloads fine-tuned artifacts (one folder per endpoint)."""
        return Path(getattr(settings, "INFERENCE_WORK_DIR", "") or settings.VAR_DIR / "serving")


def inference_conf() -> InferenceConf:
    return InferenceConf(
        heartbeat_seconds=_setting("INFERENCE_HEARTBEAT_SECONDS", 5),
        stale_after_seconds=_setting("INFERENCE_STALE_AFTER_SECONDS", 60),
        request_timeout_seconds=_setting("INFERENCE_REQUEST_TIMEOUT_SECONDS", 300),
        default_max_tokens=_setting("INFERENCE_DEFAULT_MAX_TOKENS", 128),
        stats_window=_setting("INFERENCE_STATS_WINDOW", 100),
        shared_idle_seconds=_setting("INFERENCE_SHARED_IDLE_SECONDS", 300),
    )
