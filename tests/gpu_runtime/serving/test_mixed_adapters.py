"""Requests for different LoRA adapters of one RoPE group are decoded in ONE forward.

Plain-LoRA adapters are gathered (gathered.py: per-row adapter pages, batched matmuls); these
tests check that a mixed batch decodes exactly what each request decodes alone (tokens and
logits), that the engine's counters really see one forward per step, and that adapters that
cannot be gathered (DoRA, LongLoRA's trained embeddings/norms) fall back to peft forwards of
their own without breaking the others. tests/gpu_runtime/serving/test_gathered_lora.py holds
the equality against peft for 1-16 adapters of different ranks and target sets."""

from __future__ import annotations

import pytest
import torch
from peft.tuners.lora import LoraLayer

from gpu_runtime.registry import load_model
from gpu_runtime.serving import GenerationRequest, SamplingParams
from gpu_runtime.serving.adapters import ModelInstance, resolve_adapter_dir

from .conftest import PROMPTS, greedy_reference, make_lora_artifact, merged_reference_model

LOGITS_ATOL = 1e-5  # float32, logits ~0.5: rows differ by batch shape only (~3e-7 seen)


@pytest.fixture(scope="module")
def more_artifacts(base_dir, tmp_path_factory) -> dict[str, str]:
    """Adapters that cannot be gathered, and a second adapter of the YaRN group."""
    root = tmp_path_factory.mktemp("more-adapters")
    built = {
        "longlora": make_lora_artifact(
            base_dir, root / "longlora", seed=5, train_embeddings_and_norms=True
        ),
        "dora": make_lora_artifact(base_dir, root / "dora", seed=6, use_dora=True),
        "yarn2": make_lora_artifact(
            base_dir, root / "yarn2", seed=7, rope_method="yarn", target_context=512
        ),
    }
    return {name: str(path) for name, path in built.items()}


@pytest.fixture
def all_artifacts(artifacts, more_artifacts) -> dict[str, str]:
    return {**artifacts, **more_artifacts}


def _greedy(prompt: str, adapter: str | None, max_tokens: int, seed: int) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt,
        adapter=adapter,
        sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, seed=seed),
    )


# Two requests on acme, one on bolt, one on the base: different prompt lengths (left padding)
# and max_tokens (rows leave the batch mid-way).
MIXED = [
    (PROMPTS[0], "acme", 12),
    (PROMPTS[2], "acme", 9),
    (PROMPTS[1], "bolt", 14),
    (PROMPTS[3], None, 11),
]


def _run_together(engine, specs, seed0: int) -> list:
    handles = [
        engine.submit(_greedy(prompt, adapter, n, seed0 + i))
        for i, (prompt, adapter, n) in enumerate(specs)
    ]
    engine.start()
    return [h.result(60) for h in handles]


def _assert_rows_close(got: list[torch.Tensor], want: list[torch.Tensor], label: str) -> None:
    assert len(got) == len(want), label
    for step, (a, b) in enumerate(zip(got, want, strict=True)):
        diff = (a - b).abs().max().item()
        assert diff <= LOGITS_ATOL, f"{label}: step {step} logits differ by {diff}"


def test_mixed_adapter_batch_equals_each_request_alone(
    engine_factory, artifacts, record_logits, serving_tokenizer, base_model
):
    engine = engine_factory(autostart=False, prefill_chunk_size=64)
    for name in ("acme", "bolt"):
        engine.register_adapter(name, artifacts[name])
    together = _run_together(engine, MIXED, seed0=100)
    stats = engine.stats
    # One decode forward per step, holding all four rows and three adapters (base = one).
    assert stats.max_decode_batch == 4
    assert stats.max_decode_adapters == 3
    assert stats.decode_forwards == stats.decode_steps > 0

    forwards_before = stats.decode_forwards
    for i, (prompt, adapter, n) in enumerate(MIXED):
        alone = engine.generate(_greedy(prompt, adapter, n, 200 + i), timeout=60)
        assert alone.token_ids == together[i].token_ids, (prompt, adapter)
        assert together[i].adapter == adapter and together[i].finish_reason == "length"
        _assert_rows_close(record_logits[100 + i], record_logits[200 + i], f"{adapter} {prompt}")
    assert stats.max_decode_adapters == 3  # the solo runs added single-adapter forwards only
    assert stats.decode_forwards > forwards_before
    # The adapters really change the output (otherwise "equal alone" would prove nothing);
    # shut down first, so `base_model` has no LoRA layers left in it.
    engine.shutdown()
    assert not any("lora" in name for name, _ in base_model.named_modules())
    assert together[0].token_ids != tuple(
        greedy_reference(base_model, serving_tokenizer, serving_tokenizer(PROMPTS[0]).input_ids, 12)
    )


def test_unmixable_adapters_get_forwards_of_their_own(
    engine_factory, base_dir, all_artifacts, record_logits
):
    """The control: the same kind of batch with an adapter that cannot be gathered decodes in two
    forwards per step — the counters tell the two behaviours apart — and every request still
    decodes what it decodes alone."""
    engine = engine_factory(autostart=False, prefill_chunk_size=64)
    for name in ("acme", "longlora"):
        engine.register_adapter(name, all_artifacts[name])
    specs = [(PROMPTS[0], "acme", 10), (PROMPTS[1], "longlora", 10), (PROMPTS[2], None, 10)]
    together = _run_together(engine, specs, seed0=300)
    stats = engine.stats
    assert stats.max_decode_batch == 2 and stats.max_decode_adapters == 2  # acme + base
    assert stats.decode_forwards == 2 * stats.decode_steps  # shared batch + longlora's own

    instance = engine.pool.default
    assert instance.can_mix("acme") and instance.can_mix(None)
    assert not instance.can_mix("longlora")
    for i, (prompt, adapter, n) in enumerate(specs):
        alone = engine.generate(_greedy(prompt, adapter, n, 400 + i), timeout=60)
        assert alone.token_ids == together[i].token_ids, adapter
        _assert_rows_close(record_logits[300 + i], record_logits[400 + i], str(adapter))
    # The fallback forward really applies the trained embeddings and norms.
    ids = engine.tokenizer(PROMPTS[1]).input_ids
    merged = merged_reference_model(base_dir, all_artifacts["longlora"])
    assert list(together[1].token_ids) == greedy_reference(merged, engine.tokenizer, ids, 10)


def test_cancelling_one_row_of_a_mixed_batch_leaves_the_others_exact(engine_factory, artifacts):
    engine = engine_factory(autostart=False)
    for name in ("acme", "bolt"):
        engine.register_adapter(name, artifacts[name])
    keep = [(PROMPTS[0], "acme", 16), (PROMPTS[3], None, 16)]
    handles = [engine.submit(_greedy(p, a, n, 500 + i)) for i, (p, a, n) in enumerate(keep)]
    doomed = engine.submit(_greedy(PROMPTS[1], "bolt", 200, 600))
    engine.start()
    next(iter(doomed.stream(timeout=30)))  # decoding together now
    doomed.cancel()
    assert doomed.result(30).finish_reason == "cancelled"
    results = [h.result(60) for h in handles]
    assert engine.stats.max_decode_adapters == 3
    for i, (prompt, adapter, n) in enumerate(keep):
        alone = engine.generate(_greedy(prompt, adapter, n, 700 + i), timeout=60)
        assert alone.token_ids == results[i].token_ids
    assert engine.pool.resident and all(r.pins == 0 for r in engine.pool._resident.values())


def test_group_reloaded_in_the_same_step_starts_a_new_batch(
    engine_factory, base_dir, all_artifacts
):
    """max_loaded_adapters=1: the request on yarn2 waits for yarn's to finish; the step that
    admits it evicts yarn, drops the YaRN instance and loads a new one for the same RoPE
    signature while yarn's finished row still sits in the old batch. It must not join that
    batch (whose instance no longer holds any adapter)."""
    engine = engine_factory(autostart=False, max_loaded_adapters=1)
    for name in ("yarn", "yarn2"):
        engine.register_adapter(name, all_artifacts[name])
    first, second = _run_together(
        engine, [(PROMPTS[0], "yarn", 6), (PROMPTS[0], "yarn2", 6)], seed0=800
    )
    assert engine.pool.evictions == ["yarn"]
    ids = engine.tokenizer(PROMPTS[0]).input_ids
    for name, result in (("yarn", first), ("yarn2", second)):
        merged = merged_reference_model(base_dir, all_artifacts[name])
        assert list(result.token_ids) == greedy_reference(merged, engine.tokenizer, ids, 6), name


def test_shutdown_strips_the_lora_layers_after_mixed_batches(
    engine_factory, all_artifacts, base_model
):
    """Mixed batches leave gathered hooks on the base's linear layers and peft's wrappers (a
    fallback adapter) around them; shutdown must remove both and leave the caller's base model
    exactly as it was given."""
    engine = engine_factory(autostart=False)
    for name in ("acme", "bolt", "longlora"):
        engine.register_adapter(name, all_artifacts[name])
    _run_together(
        engine,
        [(PROMPTS[0], "acme", 4), (PROMPTS[1], "bolt", 4), (PROMPTS[2], "longlora", 4)],
        seed0=900,
    )
    instance = engine.pool.default
    assert sorted(instance.gathered.adapters) == ["acme", "bolt"]
    assert instance.peft is not None and list(instance.peft.peft_config) == ["longlora"]
    hooked = [m for m in base_model.modules() if m._forward_hooks]
    assert hooked  # the gathered pools' hooks
    engine.shutdown()
    assert not any(isinstance(m, LoraLayer) for m in base_model.modules())
    assert not hasattr(base_model, "peft_config")
    assert not any(m._forward_hooks for m in base_model.modules())


# ---------------------------------------------------------------------- ModelInstance level
@pytest.fixture
def instance(engine_factory, base_dir, all_artifacts) -> ModelInstance:
    """A fresh base (its own weights) with acme, bolt, longlora and dora loaded."""
    spec = engine_factory(autostart=False).pool.default.spec
    loaded = ModelInstance(spec, load_model(str(base_dir)))
    for name in ("acme", "bolt", "longlora", "dora"):
        loaded.load_adapter(name, resolve_adapter_dir(all_artifacts[name]))
    return loaded


def _alone(instance: ModelInstance, adapter: str | None, input_ids: torch.Tensor) -> torch.Tensor:
    return instance.forward_rows([adapter], input_ids=input_ids).logits


def test_can_mix_follows_what_can_be_gathered(instance):
    assert [instance.can_mix(a) for a in (None, "acme", "bolt")] == [True, True, True]
    assert sorted(instance.gathered.adapters) == ["acme", "bolt"]
    assert not instance.can_mix("longlora")  # modules_to_save (embedding + RMSNorms): peft
    assert not instance.can_mix("dora")  # DoRA's magnitude vector is no low-rank delta: peft
    assert sorted(instance.peft.peft_config) == ["dora", "longlora"]
    assert not instance.can_mix("never-loaded")
    with pytest.raises(ValueError, match="cannot share a forward"):
        instance.forward_rows(["acme", "dora"], input_ids=torch.zeros(2, 3, dtype=torch.long))


@torch.inference_mode()
def test_forward_rows_equals_each_row_with_its_adapter_alone(instance):
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(6, 200, (5, 7), generator=generator)
    adapters = ["acme", None, "bolt", "acme", None]
    mixed = instance.forward_rows(adapters, input_ids=input_ids).logits
    for row, adapter in enumerate(adapters):
        alone = _alone(instance, adapter, input_ids[row : row + 1])[0]
        diff = (mixed[row] - alone).abs().max().item()
        assert diff <= LOGITS_ATOL, (row, adapter, diff)
    distinct = {a: _alone(instance, a, input_ids[:1]) for a in (None, "acme", "bolt", "longlora")}
    assert all(
        (distinct[a] - distinct[b]).abs().max() > 0.1 for a in distinct for b in distinct if a != b
    )
    # The bypassed modules_to_save wrappers are back: longlora alone is unchanged.
    assert torch.equal(_alone(instance, "longlora", input_ids[:1]), distinct["longlora"])


@torch.inference_mode()
def test_failed_mixed_forward_does_not_poison_later_forwards(instance):
    """A forward whose adapter list does not match the batch raises, and the gathered plan is
    cleared on the way out: the next forward of any batch runs normally."""
    input_ids = torch.randint(6, 200, (4, 5), generator=torch.Generator().manual_seed(1))
    expected = _alone(instance, "acme", input_ids)
    with pytest.raises(ValueError, match="adapters for 3 rows, batch has 4"):
        instance.forward_rows(["acme", "bolt", None], input_ids=input_ids)  # 3 names, 4 rows
    assert instance.gathered.plan is None
    assert torch.equal(_alone(instance, "acme", input_ids), expected)
    mixed = instance.forward_rows(["acme", "bolt", None, "acme"], input_ids=input_ids).logits
    assert (mixed[3] - expected[3]).abs().max().item() <= LOGITS_ATOL
