"""Packed prefill: the first chunks of several prompts (one instance; the base and any gathered
adapters mixed, segment by segment) run as ONE
forward of one packed row whose position ids restart at 0 per prompt.

These tests check that every packed prompt decodes exactly what it decodes alone (tokens, and
the logits of every sampled step), that the engine's counters really see fewer prefill
forwards than prefilled prompts — and one forward each where packing cannot apply (an adapter
that cannot be gathered next to others, a chunk that continues a cache, an attention implementation that would mix the
prompts) — and that cancellation and failures stay confined to their own request."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DynamicCache

from gpu_runtime.registry import load_model
from gpu_runtime.serving import (
    EngineConfig,
    GenerationRequest,
    InferenceEngine,
    RequestFailedError,
    SamplingParams,
)
from gpu_runtime.serving.adapters import supports_packed_prefill
from gpu_runtime.serving.kv_cache import cache_layers, split_packed_cache

from .conftest import PROMPTS, greedy_reference, make_lora_artifact, merged_reference_model

LOGITS_ATOL = 1e-5  # float32: a packed prompt differs from alone by matmul shapes only (~2e-7)


def _ids(length: int, seed: int) -> list[int]:
    """A prompt of exactly `length` token ids (tiny vocab: 512; ids < 6 are specials)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(6, 500, (length,), generator=generator).tolist()


def _greedy(prompt: str | list[int], adapter: str | None, max_tokens: int, seed: int):
    text = isinstance(prompt, str)
    return GenerationRequest(
        prompt=prompt if text else None,
        prompt_token_ids=None if text else prompt,
        adapter=adapter,
        sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, seed=seed),
    )


def _submit_all(engine, specs, seed0: int) -> list:
    return [
        engine.submit(_greedy(prompt, adapter, n, seed0 + i))
        for i, (prompt, adapter, n) in enumerate(specs)
    ]


def _steps(engine, count: int) -> None:
    """Drive the scheduler from the test thread (the engine was never started), so a test can
    act between two steps deterministically."""
    with torch.inference_mode():
        for _ in range(count):
            engine._step()


def _assert_alone_equal(engine, specs, together, record_logits, seed0, alone_seed0) -> None:
    """Each request again, alone (one forward per chunk), gives the same tokens and logits."""
    stats = engine.stats
    for i, (prompt, adapter, n) in enumerate(specs):
        forwards, chunks = stats.prefill_forwards, stats.prefill_chunks
        alone = engine.generate(_greedy(prompt, adapter, n, alone_seed0 + i), timeout=60)
        assert stats.prefill_forwards - forwards == stats.prefill_chunks - chunks  # not packed
        assert alone.token_ids == together[i].token_ids, (i, adapter)
        got, want = record_logits[seed0 + i], record_logits[alone_seed0 + i]
        assert len(got) == len(want) == n
        for step, (a, b) in enumerate(zip(got, want, strict=True)):
            diff = (a - b).abs().max().item()
            assert diff <= LOGITS_ATOL, f"request {i} ({adapter}) step {step}: {diff}"


# --------------------------------------------------------------------------- the engine
# Base and acme prompts of different lengths, interleaved: ONE packed forward (acme's spans get
# its gathered delta segment by segment, the base spans none).
MIXED = [
    (PROMPTS[0], None, 9),
    (PROMPTS[2], "acme", 7),
    (PROMPTS[1], None, 11),
    (PROMPTS[3], "acme", 8),
    (_ids(13, seed=1), None, 6),
]


def test_packed_prompts_decode_exactly_what_they_decode_alone(
    engine_factory, artifacts, record_logits, base_dir, base_model, serving_tokenizer
):
    engine = engine_factory(autostart=False, prefill_chunk_size=64)
    engine.register_adapter("acme", artifacts["acme"])
    assert engine.pool.default.can_pack_prefill
    handles = _submit_all(engine, MIXED, seed0=100)
    engine.start()
    together = [h.result(60) for h in handles]
    stats = engine.stats
    # Five prompts, all admitted in one step and within one budget: one forward.
    assert (stats.prefill_chunks, stats.prefill_forwards, stats.max_prefill_pack) == (5, 1, 5)
    assert all(r.metrics.prefill_chunks == 1 and r.metrics.ttft_s > 0 for r in together)
    assert stats.max_decode_batch == 5

    _assert_alone_equal(engine, MIXED, together, record_logits, seed0=100, alone_seed0=200)
    assert stats.max_prefill_pack == 5  # the solo runs did not pack
    # Ground truth: peft's merged acme, and the plain base once the engine unloaded acme.
    acme_ids = serving_tokenizer(PROMPTS[2]).input_ids
    merged = merged_reference_model(base_dir, artifacts["acme"])
    assert list(together[1].token_ids) == greedy_reference(merged, serving_tokenizer, acme_ids, 7)
    engine.shutdown()
    ids = serving_tokenizer(PROMPTS[1]).input_ids
    assert list(together[2].token_ids) == greedy_reference(base_model, serving_tokenizer, ids, 11)


def test_prompts_on_different_adapters_share_one_packed_forward(
    engine_factory, artifacts, record_logits
):
    """Same-step first chunks on two gathered adapters and the base pack into one row: each
    prompt's span gets its own adapter's delta (SGMV-style segments)."""
    engine = engine_factory(autostart=False, prefill_chunk_size=64)
    for name in ("acme", "bolt"):
        engine.register_adapter(name, artifacts[name])
    specs = [(PROMPTS[0], "acme", 6), (PROMPTS[1], "bolt", 6), (PROMPTS[2], None, 6)]
    handles = _submit_all(engine, specs, seed0=300)
    engine.start()
    together = [h.result(60) for h in handles]
    stats = engine.stats
    assert (stats.prefill_chunks, stats.prefill_forwards, stats.max_prefill_pack) == (3, 1, 3)
    assert stats.max_decode_adapters == 3  # they did run side by side
    _assert_alone_equal(engine, specs, together, record_logits, seed0=300, alone_seed0=400)


@pytest.fixture(scope="module")
def dora_artifact(base_dir, tmp_path_factory) -> str:
    return str(make_lora_artifact(base_dir, tmp_path_factory.mktemp("dora"), seed=6, use_dora=True))


def test_prompts_that_cannot_pack_get_a_forward_each(
    engine_factory, artifacts, dora_artifact, record_logits
):
    """The control: a DoRA adapter cannot be gathered (peft serves it alone), so its first
    chunk cannot share the packed row of the base and acme prompts."""
    engine = engine_factory(autostart=False, prefill_chunk_size=64)
    engine.register_adapter("acme", artifacts["acme"])
    engine.register_adapter("dora", dora_artifact)
    specs = [(PROMPTS[0], "acme", 6), (PROMPTS[1], "dora", 6), (PROMPTS[2], None, 6)]
    handles = _submit_all(engine, specs, seed0=500)
    engine.start()
    together = [h.result(60) for h in handles]
    stats = engine.stats
    # acme + base packed (one forward), dora alone (another).
    assert (stats.prefill_chunks, stats.prefill_forwards, stats.max_prefill_pack) == (3, 2, 2)
    assert not engine.pool.default.can_mix("dora")
    _assert_alone_equal(engine, specs, together, record_logits, seed0=500, alone_seed0=600)


def test_long_prompt_first_chunk_packed_then_continues_alone(
    engine_factory, record_logits, base_model, serving_tokenizer
):
    """Budget 16, FIFO: two short prompts (5 + 6 tokens) and the long prompt's first 5 tokens
    share step 1's packed forward; the long prompt's later chunks (16, 16, 3) continue its own
    cache in forwards of their own (cached_chunk_attention)."""
    long_ids = _ids(40, seed=2)
    specs = [(_ids(5, seed=3), None, 8), (_ids(6, seed=4), None, 8), (long_ids, None, 10)]
    engine = engine_factory(autostart=False, prefill_chunk_size=16)
    handles = _submit_all(engine, specs, seed0=500)
    _steps(engine, 1)
    long_seq = engine._prefilling[0]
    assert long_seq.request_id == handles[2].request_id and long_seq.prefilled == 5
    assert (engine.stats.prefill_forwards, engine.stats.max_prefill_pack) == (1, 3)
    engine.start()
    together = [h.result(60) for h in handles]
    stats = engine.stats
    assert (stats.prefill_chunks, stats.prefill_forwards) == (6, 4)
    assert [r.metrics.prefill_chunks for r in together] == [1, 1, 4]
    assert together[0].metrics.ttft_s < together[2].metrics.ttft_s

    _assert_alone_equal(engine, specs, together, record_logits, seed0=500, alone_seed0=600)
    assert list(together[2].token_ids) == greedy_reference(
        base_model, serving_tokenizer, long_ids, 10
    )


def test_continuing_chunk_runs_alone_beside_a_packed_pair(engine_factory, record_logits):
    """The control for a cached chunk: in step 3 the long prompt's last chunk (13 tokens)
    continues its cache in a forward of its own, while the two prompts that arrived get the
    3 tokens left — B whole, C's first token — packed together; C finishes in step 4."""
    specs = [(_ids(5, seed=11), None, 6), (_ids(40, seed=12), None, 6)]
    specs += [(_ids(2, seed=13), None, 6), (_ids(4, seed=14), None, 6)]
    engine = engine_factory(autostart=False, prefill_chunk_size=16)
    handles = _submit_all(engine, specs[:2], seed0=550)
    _steps(engine, 2)  # step 1: A + L[:11] packed; step 2: L[11:27] alone
    stats = engine.stats
    assert (stats.prefill_forwards, stats.prefill_chunks, stats.max_prefill_pack) == (2, 3, 2)
    handles += [engine.submit(_greedy(*specs[i], seed=550 + i)) for i in (2, 3)]
    _steps(engine, 1)
    assert (stats.prefill_forwards, stats.prefill_chunks, stats.max_prefill_pack) == (4, 6, 2)
    assert [s.prefilled for s in engine._prefilling] == [1]  # C, with a cache now
    engine.start()
    together = [h.result(60) for h in handles]
    assert (stats.prefill_forwards, stats.prefill_chunks) == (5, 7)
    assert [r.metrics.prefill_chunks for r in together] == [1, 3, 1, 2]
    _assert_alone_equal(engine, specs, together, record_logits, seed0=550, alone_seed0=650)


def test_cancelling_a_packed_request_leaves_the_others_exact(engine_factory, record_logits):
    """A long prompt whose first chunk was packed is cancelled mid-prefill: its cache goes, the
    request it was packed with and one that arrives later decode what they decode alone."""
    long_ids = _ids(40, seed=5)
    specs = [(_ids(7, seed=6), None, 12), (long_ids, None, 12), (_ids(4, seed=7), None, 12)]
    engine = engine_factory(autostart=False, prefill_chunk_size=16)
    # The long prompt takes 9 tokens of step 1's packed forward, then holds the queue's head.
    first_two = _submit_all(engine, specs[:2], seed0=700)
    _steps(engine, 1)
    assert engine.stats.max_prefill_pack == 2 and engine._prefilling[0].prefilled == 9
    late = engine.submit(_greedy(*specs[2], seed=702))
    first_two[1].cancel()
    _steps(engine, 1)  # the cancel lands; the late prompt prefills alone
    assert not engine._prefilling and engine.stats.prefill_forwards == 2
    cancelled = first_two[1].result(5)
    assert cancelled.finish_reason == "cancelled" and cancelled.usage.completion_tokens == 0
    engine.start()
    together = [first_two[0].result(60), cancelled, late.result(60)]
    assert engine.stats.max_decode_batch == 2
    for i, seed in ((0, 700), (2, 702)):
        alone = engine.generate(_greedy(*specs[i], seed=900 + i), timeout=60)
        assert alone.token_ids == together[i].token_ids
        for a, b in zip(record_logits[seed], record_logits[900 + i], strict=True):
            assert (a - b).abs().max().item() <= LOGITS_ATOL
    assert not engine._live_ids


POISON = 3  # a token id no generated prompt holds (_ids draws from 6..499)


@pytest.fixture
def poisoned_base(base_model):
    """The shared base raises on any forward whose input holds the POISON token."""

    def hook(module, args):
        if (args[0] == POISON).any():
            raise RuntimeError("poisoned prompt")

    handle = base_model.get_input_embeddings().register_forward_pre_hook(hook)
    yield
    handle.remove()


def test_failed_packed_forward_fails_only_the_request_that_caused_it(
    engine_factory, poisoned_base, record_logits
):
    """The packed forward raises; its chunks are retried alone, so only the poisoned request
    fails and the others decode exactly what they decode alone."""
    specs = [(_ids(5, seed=8), None, 7), ([*_ids(4, seed=9), POISON], None, 7)]
    specs.append((_ids(9, seed=10), None, 7))
    engine = engine_factory(autostart=False, prefill_chunk_size=64)
    handles = _submit_all(engine, specs, seed0=1000)
    engine.start()
    with pytest.raises(RequestFailedError, match="prefill failed: poisoned prompt"):
        handles[1].result(60)
    results = [handles[0].result(60), None, handles[2].result(60)]
    stats = engine.stats
    # The failed packed forward is not counted; the two healthy prompts ran alone.
    assert (stats.prefill_forwards, stats.prefill_chunks, stats.max_prefill_pack) == (2, 2, 1)
    for i in (0, 2):
        alone = engine.generate(_greedy(*specs[i], seed=1100 + i), timeout=60)
        assert alone.token_ids == results[i].token_ids
        for a, b in zip(record_logits[1000 + i], record_logits[1100 + i], strict=True):
            assert (a - b).abs().max().item() <= LOGITS_ATOL
    # The engine still packs afterwards.
    # Held, the scheduler's lock (a reentrant Condition) makes both arrive in one step however
    # busy the machine is; submitted one by one, a running scheduler may take the first alone.
    with engine._lock:
        again = _submit_all(engine, [specs[0], specs[2]], seed0=1200)
    assert [h.result(60).token_ids for h in again] == [results[0].token_ids, results[2].token_ids]
    assert stats.max_prefill_pack == 2


# --------------------------------------------------------------------------- building blocks
@torch.inference_mode()
def test_split_packed_cache_gives_each_prompt_its_own_cache(base_model):
    prompts = [_ids(n, seed=20 + n) for n in (5, 11, 3)]
    packed = DynamicCache(config=base_model.config)
    base_model(
        input_ids=torch.tensor([[t for p in prompts for t in p]]),
        position_ids=torch.cat([torch.arange(len(p)) for p in prompts])[None],
        past_key_values=packed,
        use_cache=True,
    )
    next_token = torch.tensor([[42]])
    for prompt, cache in zip(prompts, split_packed_cache(packed, [5, 11, 3]), strict=True):
        alone = DynamicCache(config=base_model.config)
        base_model(input_ids=torch.tensor([prompt]), past_key_values=alone, use_cache=True)
        for (k, v), (k_alone, v_alone) in zip(
            cache_layers(cache), cache_layers(alone), strict=True
        ):
            assert k.shape == k_alone.shape == (1, 2, len(prompt), 16)
            assert (k - k_alone).abs().max() <= 1e-5 and (v - v_alone).abs().max() <= 1e-5
        position = torch.tensor([[len(prompt)]])
        got = base_model(next_token, position_ids=position, past_key_values=cache).logits
        want = base_model(next_token, position_ids=position, past_key_values=alone).logits
        assert (got - want).abs().max() <= LOGITS_ATOL
    with pytest.raises(ValueError, match="spans sum"):
        split_packed_cache(packed, [5, 11])


def _with_config(model: torch.nn.Module, **changes) -> torch.nn.Module:
    holder = torch.nn.Module()
    holder.config = copy.deepcopy(model.config)
    for name, value in changes.items():
        setattr(holder.config, name, value)
    return holder


def test_only_document_aware_attention_and_static_rope_pack(base_model):
    assert base_model.config._attn_implementation == "longtune_varlen_sdpa"
    assert supports_packed_prefill(base_model)
    assert supports_packed_prefill(
        _with_config(base_model, _attn_implementation="flash_attention_2")
    )
    for name in ("sdpa", "eager"):
        assert not supports_packed_prefill(_with_config(base_model, _attn_implementation=name))
    dynamic = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    assert not supports_packed_prefill(_with_config(base_model, rope_parameters=dynamic))
    assert not supports_packed_prefill(_with_config(base_model, sliding_window=8))


@torch.inference_mode()
def test_sdpa_would_mix_packed_prompts_so_it_prefills_one_at_a_time(base_dir, serving_tokenizer):
    """Why the guard exists: under plain "sdpa" a packed row is one causal sequence, so the
    second prompt attends the first. An engine serving an sdpa model therefore never packs,
    and still decodes what model.generate does."""
    sdpa_model = load_model(str(base_dir), attn_implementation="sdpa").eval()
    first, second = _ids(6, seed=30), _ids(8, seed=31)
    packed = sdpa_model(
        input_ids=torch.tensor([first + second]),
        position_ids=torch.cat([torch.arange(6), torch.arange(8)])[None],
        past_key_values=DynamicCache(config=sdpa_model.config),
        use_cache=True,
    ).logits[0, -1]
    alone = sdpa_model(input_ids=torch.tensor([second])).logits[0, -1]
    assert (packed - alone).abs().max() > 1e-2

    engine = InferenceEngine(
        EngineConfig(base_model=str(base_dir), attn_implementation="sdpa", prefill_chunk_size=64),
        model=sdpa_model,
        tokenizer=serving_tokenizer,
        autostart=False,
    )
    try:
        assert not engine.pool.default.can_pack_prefill
        handles = _submit_all(engine, [(first, None, 5), (second, None, 5)], seed0=1300)
        engine.start()
        results = [h.result(60) for h in handles]
    finally:
        engine.shutdown()
    assert (engine.stats.prefill_forwards, engine.stats.max_prefill_pack) == (2, 1)
    for ids, result in zip((first, second), results, strict=True):
        assert list(result.token_ids) == greedy_reference(sdpa_model, serving_tokenizer, ids, 5)
