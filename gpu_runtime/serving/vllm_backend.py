"""Optional vLLM backend behind the same submit/stream/result interface.

NOT TESTED HERE: vLLM cannot be installed on the CPU-only development machines. Only the
selection logic (`select_backend`) and the RoPE compatibility check are covered by tests;
`VLLMBackend` itself is written against vLLM's `LLMEngine` API (add_request / step /
abort_request, cumulative `RequestOutput`s) and must be validated on a GPU host before use.

RoPE caveat: vLLM V1 has no per-adapter RoPE scaling (V0's long-LoRA
`long_lora_scaling_factors` is gone), so one vLLM engine serves every adapter with the base's
scaling. `VLLMBackend.register_adapter` therefore refuses an adapter whose saved config has
other `rope_parameters` than the served base (code "adapter_rope_mismatch"). Serve such an
adapter from a vLLM engine whose base is loaded with the matching scaling
(`EngineConfig.rope_method/target_context` → vLLM `hf_overrides`), or merge the adapter into
the base (peft `merge_and_unload`) and serve the merged model; the native engine handles
mixed scalings itself (adapters.py).
"""

from __future__ import annotations

import importlib.util
import itertools
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, PretrainedConfig

from gpu_runtime.registry import load_tokenizer, resolve_model_dir
from gpu_runtime.rope import (
    DEFAULT_ROPE_METHOD,
    ContextSpec,
    apply_rope_scaling,
    context_of,
    original_context_length,
)
from gpu_runtime.serving.adapters import (
    adapter_config,
    resolve_adapter_dir,
    rope_signature,
    saved_context,
)
from gpu_runtime.serving.handle import RequestHandle
from gpu_runtime.serving.types import (
    BackendUnavailableError,
    EngineClosedError,
    GenerationRequest,
    GenerationResult,
    InvalidRequestError,
    RequestMetrics,
    StreamDelta,
    UnknownAdapterError,
    Usage,
)


def vllm_available() -> bool:
    """vLLM importable and a CUDA device present (both are needed to run it)."""
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def select_backend(config: Any, backend: str = "auto", **kwargs: Any):
    """An engine for `config` (an EngineConfig): "native", "vllm", or "auto" (vLLM if available)."""
    from gpu_runtime.serving.engine import InferenceEngine

    if backend not in ("auto", "native", "vllm"):
        raise InvalidRequestError(f"unknown backend {backend!r}", field="backend")
    if backend == "vllm" and not vllm_available():
        raise BackendUnavailableError("vLLM is not installed or no CUDA device is present")
    if backend == "vllm" or (backend == "auto" and vllm_available()):
        return VLLMBackend(config, **kwargs)
    return InferenceEngine(config, **kwargs)


def served_base_config(config: Any) -> PretrainedConfig:
    """The base config with the RoPE scaling the engine serves it with."""
    base = AutoConfig.from_pretrained(resolve_model_dir(config.base_model), local_files_only=True)
    if config.rope_method is not None or config.target_context is not None:
        base = apply_rope_scaling(
            base,
            config.rope_method or DEFAULT_ROPE_METHOD,
            config.target_context or original_context_length(base),
        )
    return base


def check_adapter_rope_compatible(base: PretrainedConfig, adapter_dir) -> None:
    """Raise unless the adapter was trained with the scaling `base` is served with."""
    trained = adapter_config(adapter_dir)
    if trained is not None and rope_signature(trained) != rope_signature(base):
        raise InvalidRequestError(
            "vLLM serves every LoRA with the base's RoPE scaling; this adapter was trained "
            f"with {rope_signature(trained)} but the base is served with {rope_signature(base)}"
            ". Serve it from an engine with matching scaling, merge it, or use the native "
            "backend.",
            code="adapter_rope_mismatch",
            field="adapter",
        )


class VLLMBackend:  # pragma: no cover - needs vLLM + CUDA
    """vLLM LLMEngine driven by a background thread; same API as InferenceEngine."""

    def __init__(self, config: Any, *, max_lora_rank: int = 64, **engine_kwargs: Any) -> None:
        from vllm import EngineArgs, LLMEngine

        self.config = config
        self.base_config = served_base_config(config)
        self.tokenizer = load_tokenizer(config.base_model)
        overrides = {
            "rope_parameters": self.base_config.rope_parameters,
            "max_position_embeddings": self.base_config.max_position_embeddings,
        }
        args = EngineArgs(
            model=str(resolve_model_dir(config.base_model)),
            hf_overrides=overrides,
            max_model_len=self.base_config.max_position_embeddings,
            enable_lora=True,
            max_loras=config.max_loaded_adapters,
            max_lora_rank=max_lora_rank,
            max_num_seqs=config.max_batch_size,
            enable_chunked_prefill=True,
            max_num_batched_tokens=max(config.prefill_chunk_size, config.max_batch_size),
            **engine_kwargs,
        )
        self._engine = LLMEngine.from_engine_args(args)
        self._adapters: dict[str, tuple[int, str]] = {}
        self._lora_ids = itertools.count(1)
        self._lock = threading.Condition()
        self._incoming: deque[tuple[GenerationRequest, RequestHandle, list[int]]] = deque()
        self._aborts: set[str] = set()
        self._running: dict[str, dict[str, Any]] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="longtune-vllm", daemon=True)
        self._thread.start()

    @property
    def max_context(self) -> int:
        return int(self.base_config.max_position_embeddings)

    def context(self, adapter: str | None = None) -> ContextSpec:
        """As InferenceEngine.context: the spec the served model's saved config records."""
        base = context_of(self.base_config)
        if adapter is None or adapter not in self._adapters:
            return base
        return saved_context(Path(self._adapters[adapter][1])) or base

    def register_adapter(self, name: str, location: str) -> None:
        adapter_dir = resolve_adapter_dir(location)
        check_adapter_rope_compatible(self.base_config, adapter_dir)
        with self._lock:
            self._adapters[name] = (next(self._lora_ids), str(adapter_dir))

    def submit(self, request: GenerationRequest) -> RequestHandle:
        request.sampling.validate()
        if request.adapter is not None and request.adapter not in self._adapters:
            raise UnknownAdapterError(f"unknown adapter {request.adapter!r}", field="adapter")
        if request.prompt_token_ids is not None:
            prompt_ids = list(request.prompt_token_ids)
        else:
            prompt_ids = self.tokenizer(request.prompt or "").input_ids
        handle = RequestHandle(request.request_id, self._abort)
        with self._lock:
            if self._closed:
                raise EngineClosedError("the engine is shut down")
            self._incoming.append((request, handle, prompt_ids))
            self._lock.notify_all()
        return handle

    def generate(
        self, request: GenerationRequest, timeout: float | None = None
    ) -> GenerationResult:
        return self.submit(request).result(timeout)

    def shutdown(self, timeout: float | None = 30.0) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(timeout)

    def _abort(self, request_id: str) -> None:
        with self._lock:
            self._aborts.add(request_id)
            self._lock.notify_all()

    def _run(self) -> None:
        from vllm import SamplingParams as VllmSamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest

        while True:
            with self._lock:
                while not (self._closed or self._incoming or self._aborts or self._running):
                    self._lock.wait()
                if self._closed:
                    return
                incoming, self._incoming = list(self._incoming), deque()
                aborts, self._aborts = self._aborts, set()
            for request, handle, prompt_ids in incoming:
                params = request.sampling
                lora = None
                if request.adapter is not None:
                    lora_id, path = self._adapters[request.adapter]
                    lora = LoRARequest(request.adapter, lora_id, path)
                self._engine.add_request(
                    request.request_id,
                    TokensPrompt(prompt_token_ids=prompt_ids),
                    VllmSamplingParams(
                        max_tokens=params.max_tokens,
                        temperature=params.temperature,
                        top_p=params.top_p,
                        seed=params.seed,
                        stop=list(params.stop),
                        stop_token_ids=list(params.stop_token_ids or []),
                        ignore_eos=params.ignore_eos,
                    ),
                    lora_request=lora,
                )
                self._running[request.request_id] = {
                    "handle": handle,
                    "adapter": request.adapter,
                    "submitted": time.perf_counter(),
                    "first": None,
                    "text": "",
                    "tokens": 0,
                }
            if aborts:
                self._engine.abort_request([r for r in aborts if r in self._running])
                for request_id in aborts:
                    self._emit_cancelled(request_id)
            for output in self._engine.step():
                self._emit(output)

    def _emit(self, output: Any) -> None:
        state = self._running.get(output.request_id)
        if state is None:
            return
        completion = output.outputs[0]
        now = time.perf_counter()
        if state["first"] is None and completion.token_ids:
            state["first"] = now
        new_text = completion.text[len(state["text"]) :]
        new_tokens = tuple(completion.token_ids[state["tokens"] :])
        state["text"], state["tokens"] = completion.text, len(completion.token_ids)
        reason = completion.finish_reason if output.finished else None
        reason = {"abort": "cancelled"}.get(reason, reason)
        state["handle"]._push(StreamDelta(output.request_id, new_text, new_tokens, reason))
        if output.finished:
            self._running.pop(output.request_id)
            self._finish(
                output.request_id,
                state,
                completion,
                reason or "stop",
                len(output.prompt_token_ids),
                now,
            )

    def _emit_cancelled(self, request_id: str) -> None:
        state = self._running.pop(request_id, None)
        if state is not None:
            state["handle"]._push(StreamDelta(request_id, "", (), "cancelled"))
            self._finish(request_id, state, None, "cancelled", 0, time.perf_counter())

    def _finish(self, request_id, state, completion, reason, prompt_tokens, now) -> None:
        token_ids = tuple(completion.token_ids) if completion is not None else ()
        first = state["first"]
        state["handle"]._finish(
            GenerationResult(
                request_id=request_id,
                text=state["text"],
                token_ids=token_ids,
                finish_reason=reason,
                usage=Usage(prompt_tokens, len(token_ids)),
                metrics=RequestMetrics(
                    queued_s=0.0,
                    ttft_s=None if first is None else first - state["submitted"],
                    total_s=now - state["submitted"],
                    decode_tokens_per_s=(len(token_ids) - 1) / max(now - first, 1e-9)
                    if first is not None and len(token_ids) > 1
                    else None,
                    prefill_chunks=0,
                ),
                adapter=state["adapter"],
            )
        )
