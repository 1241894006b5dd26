"""Request / response dataclasses and errors of the serving engine (no torch here).

These are the only types a caller (a replica process behind the Django gateway) touches, so
they are plain dataclasses that map 1:1 onto an OpenAI completions/chat response: text,
finish_reason "stop"/"length", usage {prompt_tokens, completion_tokens, total_tokens}.
Errors carry a machine-readable `code` and the `field` at fault so a gateway can turn them
into a 4xx without string matching.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Literal

from gpu_runtime.contract import CONTEXT_LENGTH_EXCEEDED

FinishReason = Literal["stop", "length", "cancelled", "error"]


class ServingError(Exception):
    """Base class; `code` is stable and machine-readable, `field` names the bad input."""

    code = "serving_error"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field


class InvalidRequestError(ServingError):
    """The request itself is wrong (maps to HTTP 400)."""

    code = "invalid_request"


class UnknownAdapterError(InvalidRequestError):
    """The request names an adapter that was never registered (maps to HTTP 404)."""

    code = "adapter_not_found"


class ContextLengthError(InvalidRequestError):
    """prompt + max_tokens does not fit the context the model is served with (HTTP 400)."""

    code = CONTEXT_LENGTH_EXCEEDED


class EngineClosedError(ServingError):
    """submit() after shutdown() (HTTP 503)."""

    code = "engine_closed"


class RequestFailedError(ServingError):
    """The engine could not serve an accepted request (adapter failed to load, forward failed)."""

    code = "request_failed"


class BackendUnavailableError(ServingError):
    """An explicitly requested backend (vLLM) cannot run here."""

    code = "backend_unavailable"


@dataclass(frozen=True)
class SamplingParams:
    """Per-request decoding controls (OpenAI names). temperature 0 means greedy."""

    max_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # None: the tokenizer's eos token ends generation (finish_reason "stop").
    stop_token_ids: tuple[int, ...] | None = None
    ignore_eos: bool = False

    def validate(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise InvalidRequestError(
                "max_tokens must be an integer >= 1", code="invalid_max_tokens", field="max_tokens"
            )
        if not math.isfinite(self.temperature) or not 0.0 <= self.temperature <= 100.0:
            raise InvalidRequestError(
                "temperature must be in [0, 100]", code="invalid_temperature", field="temperature"
            )
        if not math.isfinite(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise InvalidRequestError(
                "top_p must be in (0, 1]", code="invalid_top_p", field="top_p"
            )
        if isinstance(self.stop, str) or any(not isinstance(s, str) or not s for s in self.stop):
            raise InvalidRequestError(
                "stop must be a sequence of non-empty strings", code="invalid_stop", field="stop"
            )


@dataclass
class GenerationRequest:
    """One completion. Give `prompt` (text, tokenized with the tokenizer's special tokens) or
    `prompt_token_ids` (used as is, e.g. from `chat.chat_prompt_token_ids`). `adapter` is the
    name given to `engine.register_adapter`, or None for the base model."""

    prompt: str | None = None
    prompt_token_ids: list[int] | None = None
    adapter: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class StreamDelta:
    """What one scheduler step produced for one request: new text (may be "" while a possible
    stop string or a partial UTF-8 character is held back), the new token ids, and on the last
    delta the finish_reason."""

    request_id: str
    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class RequestMetrics:
    """Wall-clock timings (seconds) measured by the engine for one request."""

    queued_s: float  # submit → first prefill chunk
    ttft_s: float | None  # submit → first token sampled
    total_s: float  # submit → finished
    decode_tokens_per_s: float | None  # (completion tokens - 1) / (finish - first token)
    prefill_chunks: int


@dataclass(frozen=True)
class GenerationResult:
    request_id: str
    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    usage: Usage
    metrics: RequestMetrics
    adapter: str | None = None
