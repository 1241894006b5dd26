"""vLLM is chosen only when it can run; its RoPE limitation is enforced before loading."""

from __future__ import annotations

import importlib.util

import pytest

from gpu_runtime.serving import (
    BackendUnavailableError,
    EngineConfig,
    InferenceEngine,
    select_backend,
    vllm_backend,
)
from gpu_runtime.serving.vllm_backend import check_adapter_rope_compatible, served_base_config


def test_native_engine_when_vllm_is_not_importable(base_dir, monkeypatch):
    monkeypatch.setattr(vllm_backend.importlib.util, "find_spec", lambda name: None)
    assert not vllm_backend.vllm_available()
    engine = select_backend(EngineConfig(base_model=str(base_dir)), "auto")
    try:
        assert isinstance(engine, InferenceEngine)
    finally:
        engine.shutdown()
    with pytest.raises(BackendUnavailableError):
        select_backend(EngineConfig(base_model=str(base_dir)), "vllm")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM installed")
def test_auto_tries_vllm_when_it_reports_available(base_dir, monkeypatch):
    # With the probe saying yes, "auto" goes down the vLLM path: here that means importing vllm.
    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: True)
    with pytest.raises(ModuleNotFoundError, match="vllm"):
        select_backend(EngineConfig(base_model=str(base_dir)), "auto")


def test_vllm_refuses_adapters_trained_with_other_rope_scaling(base_dir, artifacts):
    from pathlib import Path

    plain = served_base_config(EngineConfig(base_model=str(base_dir)))
    yarn = served_base_config(
        EngineConfig(base_model=str(base_dir), rope_method="yarn", target_context=512)
    )
    check_adapter_rope_compatible(plain, Path(artifacts["acme"]))
    check_adapter_rope_compatible(yarn, Path(artifacts["yarn"]))
    with pytest.raises(Exception) as error:
        check_adapter_rope_compatible(plain, Path(artifacts["yarn"]))
    assert getattr(error.value, "code", None) == "adapter_rope_mismatch"
