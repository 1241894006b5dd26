"""Multi-LoRA serving: per-request adapters, peft-merged equivalence, LRU, RoPE groups."""

from __future__ import annotations

import json

import pytest

from gpu_runtime.serving import (
    EngineConfig,
    GenerationRequest,
    InferenceEngine,
    SamplingParams,
    UnknownAdapterError,
)

from .conftest import PROMPTS, greedy_reference, merged_reference_model

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def references(base_dir, artifacts, base_model, serving_tokenizer) -> dict[str | None, list[int]]:
    """Greedy continuation of PROMPTS[0] by peft's merged model for each adapter (and base)."""
    ids = serving_tokenizer(PROMPTS[0]).input_ids
    refs = {None: greedy_reference(base_model, serving_tokenizer, ids, 12)}
    for name, path in artifacts.items():
        merged = merged_reference_model(base_dir, path)
        refs[name] = greedy_reference(merged, serving_tokenizer, ids, 12)
    return refs


def _request(adapter: str | None) -> GenerationRequest:
    return GenerationRequest(prompt=PROMPTS[0], adapter=adapter, sampling=GREEDY)


def _register(engine, artifacts, *names):
    for name in names:
        engine.register_adapter(name, artifacts[name])


def test_adapter_output_differs_from_base_and_matches_peft_merged(
    engine_factory, artifacts, references
):
    engine = engine_factory()
    _register(engine, artifacts, "acme")
    result = engine.generate(_request("acme"), timeout=30)
    assert result.adapter == "acme"
    assert list(result.token_ids) == references["acme"]
    assert references["acme"] != references[None]


def test_mixed_adapters_in_flight_each_get_their_own_weights(engine_factory, artifacts, references):
    engine = engine_factory(autostart=False)
    _register(engine, artifacts, "acme", "bolt")
    handles = {name: engine.submit(_request(name)) for name in (None, "acme", "bolt")}
    engine.start()
    for name, handle in handles.items():
        assert list(handle.result(30).token_ids) == references[name], name
    assert len({tuple(references[n]) for n in handles}) == 3


def test_lru_evicts_least_recently_used_and_reloads_on_demand(
    engine_factory, artifacts, references
):
    engine = engine_factory(max_loaded_adapters=2)
    _register(engine, artifacts, "acme", "bolt", "cove")
    for name in (
        "acme",
        "bolt",
        "acme",
        "cove",
    ):  # "acme" was used after "bolt": "bolt" is the LRU victim
        assert list(engine.generate(_request(name), timeout=30).token_ids) == references[name]
    assert engine.pool.evictions == ["bolt"]
    assert engine.pool.resident == ["acme", "cove"]
    assert list(engine.generate(_request("bolt"), timeout=30).token_ids) == references["bolt"]
    assert engine.pool.evictions == ["bolt", "acme"] and engine.pool.resident == ["cove", "bolt"]
    # Base requests still see the plain base after all that swapping.
    assert list(engine.generate(_request(None), timeout=30).token_ids) == references[None]


def test_pinned_adapters_are_not_evicted_requests_wait_instead(
    engine_factory, artifacts, references
):
    engine = engine_factory(autostart=False, max_loaded_adapters=1)
    _register(engine, artifacts, "acme", "bolt")
    handles = {name: engine.submit(_request(name)) for name in ("acme", "bolt")}
    engine.start()
    for name, handle in handles.items():
        assert list(handle.result(30).token_ids) == references[name]
    assert engine.pool.evictions == ["acme"]  # "bolt" loaded only once "acme" had finished


def test_adapter_with_other_rope_scaling_gets_its_own_base_instance(
    engine_factory, artifacts, references
):
    saved = json.loads((__import__("pathlib").Path(artifacts["yarn"]) / "config.json").read_text())
    assert saved["rope_parameters"]["rope_type"] == "yarn"
    engine = engine_factory(max_loaded_adapters=2)
    _register(engine, artifacts, "acme", "yarn")
    assert list(engine.generate(_request("yarn"), timeout=30).token_ids) == references["yarn"]
    assert list(engine.generate(_request("acme"), timeout=30).token_ids) == references["acme"]
    assert len(engine.pool.instances) == 2
    yarn_instance = engine.pool.instance_for("yarn")
    assert yarn_instance is not engine.pool.default and yarn_instance.max_context == 512
    assert yarn_instance.base.config.rope_parameters["rope_type"] == "yarn"
    assert engine.pool.instance_for("acme") is engine.pool.default
    # The yarn group only exists while one of its adapters is resident.
    _register(engine, artifacts, "bolt")
    engine.generate(_request("bolt"), timeout=30)
    assert engine.pool.evictions == ["yarn"] and len(engine.pool.instances) == 1


def test_adapter_matching_the_served_scaling_shares_the_base(base_dir, artifacts, references):
    engine = InferenceEngine(
        EngineConfig(base_model=str(base_dir), rope_method="yarn", target_context=512)
    )
    try:
        _register(engine, artifacts, "yarn")
        assert list(engine.generate(_request("yarn"), timeout=30).token_ids) == references["yarn"]
        assert list(engine.pool.instances) == [engine.pool.default.signature]
    finally:
        engine.shutdown()


def test_unknown_adapter_is_rejected_at_submit(engine_factory):
    engine = engine_factory()
    with pytest.raises(UnknownAdapterError) as error:
        engine.submit(_request("nope"))
    assert (error.value.code, error.value.field) == ("adapter_not_found", "adapter")


def test_broken_adapter_fails_only_its_request(engine_factory, tmp_path, references):
    (tmp_path / "adapter_config.json").write_text("{not json")
    engine = engine_factory()
    engine.register_adapter("broken", str(tmp_path))
    broken = engine.submit(_request("broken"))
    fine = engine.submit(_request(None))
    with pytest.raises(Exception) as error:
        broken.result(30)
    assert getattr(error.value, "code", None) == "request_failed"
    assert list(fine.result(30).token_ids) == references[None]
