"""LongTune inference serving: multi-LoRA, RoPE-group-aware, continuously batched.

    engine = InferenceEngine(EngineConfig(base_model="s3://models/llama", rope_method="yarn",
                                          target_context=32768))
    engine.register_adapter("acme-support", "s3://artifacts/org-1/job-7/final")
    handle = engine.submit(chat_request(engine.tokenizer, messages, adapter="acme-support",
                                        sampling=SamplingParams(max_tokens=256, stop=("\\n\\n",))))
    for delta in handle.stream(): ...          # or: async for delta in handle.astream()
    result = handle.result()                   # text, finish_reason, usage, metrics

`select_backend` returns the vLLM backend instead when vLLM is importable on a CUDA machine.
"""

from gpu_runtime.serving.chat import chat_prompt_token_ids, chat_request, render_chat
from gpu_runtime.serving.engine import EngineConfig, EngineStats, InferenceEngine
from gpu_runtime.serving.handle import RequestHandle
from gpu_runtime.serving.types import (
    BackendUnavailableError,
    ContextLengthError,
    EngineClosedError,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    InvalidRequestError,
    RequestFailedError,
    RequestMetrics,
    SamplingParams,
    ServingError,
    StreamDelta,
    UnknownAdapterError,
    Usage,
)
from gpu_runtime.serving.vllm_backend import VLLMBackend, select_backend, vllm_available

__all__ = [
    "BackendUnavailableError",
    "ContextLengthError",
    "EngineClosedError",
    "EngineConfig",
    "EngineStats",
    "FinishReason",
    "GenerationRequest",
    "GenerationResult",
    "InferenceEngine",
    "InvalidRequestError",
    "RequestFailedError",
    "RequestHandle",
    "RequestMetrics",
    "SamplingParams",
    "ServingError",
    "StreamDelta",
    "UnknownAdapterError",
    "Usage",
    "VLLMBackend",
    "chat_prompt_token_ids",
    "chat_request",
    "render_chat",
    "select_backend",
    "vllm_available",
]
