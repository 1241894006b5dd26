"""Inference knobs as one typed object, read from Django settings.

The environment is read once, in settings.py (``INFERENCE_*``): tests want a replica that
heartbeats every second and notices a stop at once, production wants fewer writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings


@dataclass(frozen=True)
class InferenceConf:
    heartbeat_seconds: int  # replica heartbeat + stop-flag poll period
    stale_after_seconds: int  # a replica silent this long is not routed to
    request_timeout_seconds: int  # gateway -> replica read timeout (between chunks)
    default_max_tokens: int  # completion budget when the request gives none
    stats_window: int  # GET /v1/endpoints/{id} averages TTFT / tokens/s over this many requests
    shared_idle_seconds: int  # a shared server with no endpoint this long stops (frees its slot)
    shared_max_adapters: int  # adapters a shared server keeps hot (LRU beyond)
    shared_adapter_bytes: int  # its gathered LoRA buffers per RoPE group
    token_counter_ttl_seconds: int  # the Redis month counter is rebuilt from the ledger this often
    route_cache_seconds: int  # the longest a gateway process keeps a route (0: no route cache)

    @property
    def work_dir(self) -> Path:
        """Where a replica downloads fine-tuned artifacts (one folder per endpoint)."""
        return Path(settings.INFERENCE_WORK_DIR or settings.VAR_DIR / "serving")


def inference_conf() -> InferenceConf:
    return InferenceConf(
        heartbeat_seconds=int(settings.INFERENCE_HEARTBEAT_SECONDS),
        stale_after_seconds=int(settings.INFERENCE_STALE_AFTER_SECONDS),
        request_timeout_seconds=int(settings.INFERENCE_REQUEST_TIMEOUT_SECONDS),
        default_max_tokens=int(settings.INFERENCE_DEFAULT_MAX_TOKENS),
        stats_window=int(settings.INFERENCE_STATS_WINDOW),
        shared_idle_seconds=int(settings.INFERENCE_SHARED_IDLE_SECONDS),
        shared_max_adapters=int(settings.INFERENCE_SHARED_MAX_ADAPTERS),
        shared_adapter_bytes=int(settings.INFERENCE_SHARED_ADAPTER_BYTES),
        token_counter_ttl_seconds=int(settings.INFERENCE_TOKEN_COUNTER_TTL_SECONDS),
        route_cache_seconds=int(settings.INFERENCE_ROUTE_CACHE_SECONDS),
    )
