"""Per-request state inside the scheduler: prompt, KV cache, RNG, text stream, timings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from gpu_runtime.serving.handle import RequestHandle
from gpu_runtime.serving.sampling import make_generator
from gpu_runtime.serving.text_stream import IncrementalDetokenizer, StopStringBuffer
from gpu_runtime.serving.types import (
    FinishReason,
    GenerationRequest,
    GenerationResult,
    RequestMetrics,
    StreamDelta,
    Usage,
)


@dataclass(eq=False)
class Sequence:
    request: GenerationRequest
    handle: RequestHandle
    prompt_ids: list[int]
    stop_token_ids: frozenset[int]
    tokenizer: Any
    submitted_at: float = field(default_factory=time.perf_counter)
    # Filled on admission.
    instance: Any = None  # the ModelInstance (RoPE group) serving this request
    generator: torch.Generator | None = None
    detokenizer: IncrementalDetokenizer | None = None
    stops: StopStringBuffer | None = None
    max_context: int = 0
    cache: DynamicCache | None = None  # own cache while prefilling / between batches
    prefilled: int = 0  # prompt tokens already in the cache
    prefill_chunks: int = 0
    generated: list[int] = field(default_factory=list)
    text: str = ""
    started_at: float | None = None
    first_token_at: float | None = None
    finish_reason: FinishReason | None = None

    @property
    def adapter(self) -> str | None:
        return self.request.adapter

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def prefill_done(self) -> bool:
        return self.prefilled == len(self.prompt_ids)

    @property
    def num_cached(self) -> int:
        """Tokens whose K/V are in the cache = position id of the next token fed to the model."""
        return len(self.prompt_ids) + max(0, len(self.generated) - 1)

    def admit(self, max_context: int) -> None:
        params = self.request.sampling
        self.generator = make_generator(params.seed)
        self.detokenizer = IncrementalDetokenizer(self.tokenizer, self.prompt_ids)
        self.stops = StopStringBuffer(params.stop)
        self.max_context = max_context
        self.started_at = time.perf_counter()

    def append_token(self, token_id: int) -> None:
        """Record a sampled token, stream its text, and decide whether the request is done."""
        assert self.detokenizer is not None and self.stops is not None
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.generated.append(token_id)
        params = self.request.sampling
        is_stop_token = token_id in self.stop_token_ids and not params.ignore_eos
        text = "" if is_stop_token else self.stops.feed(self.detokenizer.push(token_id))
        if is_stop_token or self.stops.stopped:
            self.finish_reason = "stop"
        elif len(self.generated) >= params.max_tokens or self.num_cached >= self.max_context:
            self.finish_reason = "length"
        if self.finish_reason is not None and not self.stops.stopped:
            text += self.stops.feed(self.detokenizer.flush()) + self.stops.flush()
            if self.stops.stopped:  # the flushed tail completed a stop string
                self.finish_reason = "stop"
        self.text += text
        self.handle._push(StreamDelta(self.request_id, text, (token_id,), self.finish_reason))

    def finish(self, reason: FinishReason | None = None) -> GenerationResult:
        """Build the result and hand it to the caller (reason overrides, e.g. "cancelled")."""
        if reason is not None and self.finish_reason is None:
            self.finish_reason = reason
            self.handle._push(StreamDelta(self.request_id, "", (), reason))
        assert self.finish_reason is not None
        now = time.perf_counter()
        decode_tps = None
        if self.first_token_at is not None and len(self.generated) > 1:
            decode_tps = (len(self.generated) - 1) / max(now - self.first_token_at, 1e-9)
        result = GenerationResult(
            request_id=self.request_id,
            text=self.text,
            token_ids=tuple(self.generated),
            finish_reason=self.finish_reason,
            usage=Usage(len(self.prompt_ids), len(self.generated)),
            metrics=RequestMetrics(
                queued_s=(self.started_at or now) - self.submitted_at,
                ttft_s=None
                if self.first_token_at is None
                else self.first_token_at - self.submitted_at,
                total_s=now - self.submitted_at,
                decode_tokens_per_s=decode_tps,
                prefill_chunks=self.prefill_chunks,
            ),
            adapter=self.adapter,
        )
        self.handle._finish(result)
        return result
