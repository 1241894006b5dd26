"""Varlen attention: packed rows behave like separate documents, without an L×L mask."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, MistralConfig, Qwen2Config
from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

import gpu_runtime.attention as attention
from gpu_runtime.attention import (
    FLASH_ATTENTION_2,
    VARLEN_SDPA,
    cached_chunk_attention,
    cu_seqlens_from_position_ids,
    register_varlen_attention,
    select_attention_implementation,
    varlen_attention,
    varlen_sdpa_attention_forward,
)
from gpu_runtime.registry import load_model

DOC_LENGTHS = (7, 20, 1, 5, 31)


def _packed_batch(vocab: int = 500, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    docs = [torch.randint(10, vocab, (n,), generator=g) for n in DOC_LENGTHS]
    input_ids = torch.cat(docs)[None]  # [1, L]
    position_ids = torch.cat([torch.arange(len(d)) for d in docs])[None]  # [1, L]
    return docs, input_ids, position_ids


def _logits_one_by_one(model, docs):
    with torch.no_grad():
        return torch.cat([model(input_ids=d[None], use_cache=False).logits[0] for d in docs])


# --------------------------------------------------------------------------- selection


@pytest.mark.parametrize(
    ("has_flash", "has_cuda", "expected"),
    [
        (True, True, FLASH_ATTENTION_2),
        (True, False, VARLEN_SDPA),
        (False, True, VARLEN_SDPA),
        (False, False, VARLEN_SDPA),
    ],
)
def test_auto_picks_flash_only_with_flash_attn_and_cuda(monkeypatch, has_flash, has_cuda, expected):
    monkeypatch.setattr(attention, "flash_attn_available", lambda: has_flash)
    monkeypatch.setattr(attention, "cuda_available", lambda: has_cuda)
    assert select_attention_implementation("auto") == expected


@pytest.mark.parametrize("name", ["sdpa", "eager", VARLEN_SDPA, FLASH_ATTENTION_2])
def test_explicit_names_pass_through(name):
    assert select_attention_implementation(name) == name


def test_unknown_name_is_rejected():
    with pytest.raises(ValueError, match="unknown attention implementation"):
        select_attention_implementation("flash_attention_9")


# --------------------------------------------------------------------------- boundaries


def test_cu_seqlens_match_transformers_flash_attention_convention():
    _, _, position_ids = _packed_batch()
    cu_seqlens, max_len = cu_seqlens_from_position_ids(position_ids)
    (expected_cu, _), (expected_max, _) = prepare_fa_kwargs_from_position_ids(position_ids)
    assert cu_seqlens.tolist() == expected_cu.tolist() == [0, 7, 27, 28, 33, 64]
    assert max_len == int(expected_max) == 31


def test_cu_seqlens_start_a_document_at_every_row():
    position_ids = torch.tensor([[0, 1, 2, 0], [3, 4, 0, 1]])  # row 2 continues a document
    cu_seqlens, _ = cu_seqlens_from_position_ids(position_ids)
    assert cu_seqlens.tolist() == [0, 3, 4, 6, 8]


def test_varlen_attention_equals_per_document_dense_attention():
    g = torch.Generator().manual_seed(0)
    query = torch.randn(2, 4, 12, 8, generator=g)  # [B, Hq, L, D]
    key, value = torch.randn(2, 2, 12, 8, generator=g), torch.randn(2, 2, 12, 8, generator=g)
    position_ids = torch.tensor([list(range(5)) + list(range(7)), list(range(12))])
    out = varlen_attention(query, key, value, position_ids)  # [B, L, Hq, D]
    k_full, v_full = key.repeat_interleave(2, 1), value.repeat_interleave(2, 1)
    for b, spans in enumerate([[(0, 5), (5, 12)], [(0, 12)]]):
        for s, e in spans:
            n = e - s
            scores = query[b, :, s:e] @ k_full[b, :, s:e].transpose(-1, -2) / 8**0.5
            scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
            expected = scores.softmax(-1) @ v_full[b, :, s:e]  # [Hq, n, D]
            torch.testing.assert_close(out[b, s:e], expected.transpose(0, 1))


# --------------------------------------------------------------------------- full models


def test_packed_logits_equal_one_by_one_logits(tiny_model_dir):
    model = load_model(str(tiny_model_dir), attn_implementation=VARLEN_SDPA).eval()
    docs, input_ids, position_ids = _packed_batch()
    with torch.no_grad():
        packed = model(input_ids=input_ids, position_ids=position_ids).logits[0]
    separate = _logits_one_by_one(model, docs)
    torch.testing.assert_close(packed, separate, rtol=1e-4, atol=1e-4)
    # control: the same row without document boundaries really is different
    with torch.no_grad():
        unpacked = model(input_ids=input_ids, use_cache=False).logits[0]
    assert (unpacked[7:] - separate[7:]).abs().max() > 1e-2


def test_packed_training_never_sees_a_dense_mask(tiny_model_dir):
    """Spy on what the attention function receives: no 4-D mask, and the position ids."""
    received = []

    def spy(module, query, key, value, attention_mask, **kwargs):
        received.append((attention_mask, kwargs.get("position_ids"), query.shape[2]))
        return varlen_sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    register_varlen_attention("longtune_varlen_sdpa_spy", spy)
    model = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, attn_implementation="longtune_varlen_sdpa_spy", local_files_only=True
    ).train()
    docs, input_ids, position_ids = _packed_batch()
    out = model(input_ids=input_ids, position_ids=position_ids, labels=input_ids)
    out.loss.backward()
    assert len(received) == model.config.num_hidden_layers
    for mask, seen_positions, length in received:
        assert mask is None
        assert length == input_ids.shape[1]
        assert torch.equal(seen_positions, position_ids)


def test_stock_sdpa_builds_the_dense_mask_we_avoid(tiny_model_dir):
    """Control for the test above: transformers' sdpa gets an [1, 1, L, L] mask here."""
    received = []

    def spy(module, query, key, value, attention_mask, **kwargs):
        received.append(attention_mask)
        return attention.sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register("test_sdpa_spy", spy)
    AttentionMaskInterface.register("test_sdpa_spy", sdpa_mask)
    model = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, attn_implementation="test_sdpa_spy", local_files_only=True
    )
    _, input_ids, position_ids = _packed_batch()
    with torch.no_grad():
        model(input_ids=input_ids, position_ids=position_ids, use_cache=False)
    length = input_ids.shape[1]
    assert received[0] is not None and received[0].shape[-2:] == (length, length)


def test_generation_with_kv_cache_matches_sdpa(tiny_model_dir):
    varlen = load_model(str(tiny_model_dir), attn_implementation=VARLEN_SDPA).eval()
    sdpa = load_model(str(tiny_model_dir), attn_implementation="sdpa").eval()
    g = torch.Generator().manual_seed(3)
    input_ids = torch.randint(10, 500, (2, 9), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :3] = 0  # left padding forces the dense fallback path
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=2)
    assert torch.equal(
        varlen.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs),
        sdpa.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs),
    )


# --------------------------------------------------------------------------- chunk over a cache


@pytest.mark.parametrize(("q_heads", "kv_heads"), [(4, 4), (4, 2), (8, 1)])
@pytest.mark.parametrize(("past", "chunk"), [(1, 1), (13, 1), (17, 6), (40, 40)])
def test_cached_chunk_attention_equals_masked_attention(q_heads, kv_heads, past, chunk):
    """LSE-merged (cache, unmasked) + (chunk, causal) == one SDPA with the bottom-right mask."""
    g = torch.Generator().manual_seed(past * 100 + chunk)
    total = past + chunk
    query = torch.randn(2, q_heads, chunk, 16, generator=g)
    key = torch.randn(2, kv_heads, total, 16, generator=g)
    value = torch.randn(2, kv_heads, total, 16, generator=g)
    mask = torch.ones(chunk, total, dtype=torch.bool).tril(past)  # query i sees keys <= past + i
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, enable_gqa=True, scale=0.3
    ).transpose(1, 2)
    got = cached_chunk_attention(query, key, value, scaling=0.3, use_flash=False)
    assert got.shape == (2, chunk, q_heads, 16)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # control: attending the whole chunk (no causal part) is measurably different
    if chunk > 1:
        unmasked = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, enable_gqa=True, scale=0.3
        ).transpose(1, 2)
        assert (unmasked - expected).abs().max() > 1e-3


def test_chunked_prefill_needs_no_mask_and_matches_one_shot(tiny_model_dir):
    """Feeding a prompt in chunks through the cache gives the one-shot logits, and no chunk
    after the first receives a mask (the [chunk, cache + chunk] mask is what we avoid)."""
    received = []

    def spy(module, query, key, value, attention_mask, **kwargs):
        received.append((attention_mask, query.shape[2], key.shape[2]))
        return varlen_sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    register_varlen_attention("longtune_varlen_sdpa_chunk_spy", spy)
    model = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, attn_implementation="longtune_varlen_sdpa_chunk_spy", local_files_only=True
    ).eval()
    g = torch.Generator().manual_seed(5)
    input_ids = torch.randint(10, 500, (1, 50), generator=g)
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    chunks = []
    with torch.no_grad():
        one_shot = model(input_ids=input_ids, use_cache=False).logits[0]
        received.clear()
        for start, end in ((0, 20), (20, 37), (37, 49), (49, 50)):
            out = model(
                input_ids=input_ids[:, start:end],
                position_ids=torch.arange(start, end)[None],
                past_key_values=cache,
                use_cache=True,
            )
            chunks.append(out.logits[0])
    torch.testing.assert_close(torch.cat(chunks), one_shot, rtol=1e-4, atol=1e-4)
    layers = model.config.num_hidden_layers
    assert len(received) == 4 * layers
    assert all(mask is None for mask, _, _ in received)
    assert [(q, k) for _, q, k in received[::layers]] == [(20, 20), (17, 37), (12, 49), (1, 50)]


@pytest.mark.parametrize(
    "config",
    [
        MistralConfig(
            vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, sliding_window=8,
        ),
        Qwen2Config(
            vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2,
        ),
    ],
    ids=["mistral-sliding-window", "qwen2"],
)  # fmt: skip
def test_other_rope_architectures_pack_correctly(config):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=VARLEN_SDPA).eval()
    docs, input_ids, position_ids = _packed_batch()
    with torch.no_grad():
        packed = model(input_ids=input_ids, position_ids=position_ids).logits[0]
    sdpa = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    sdpa.load_state_dict(model.state_dict())
    torch.testing.assert_close(packed, _logits_one_by_one(sdpa, docs), rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(
    not (torch.cuda.is_available() and attention.flash_attn_available()),
    reason="needs CUDA and flash-attn",
)
def test_flash_attention_packed_equivalence_on_gpu(tiny_model_dir):
    """Both GPU routes (our flash switch and transformers' flash_attention_2) match one-by-one."""
    docs, input_ids, position_ids = _packed_batch()
    input_ids, position_ids = input_ids.cuda(), position_ids.cuda()
    for name in (VARLEN_SDPA, FLASH_ATTENTION_2):
        model = (
            load_model(str(tiny_model_dir), attn_implementation=name, dtype=torch.bfloat16)
            .cuda()
            .eval()
        )
        with torch.no_grad():
            packed = model(input_ids=input_ids, position_ids=position_ids).logits[0].float()
            separate = torch.cat([model(input_ids=d[None].cuda()).logits[0].float() for d in docs])
        torch.testing.assert_close(packed, separate, rtol=2e-2, atol=2e-2)


def test_sliding_window_model_keeps_its_mask_over_a_cache():
    """A windowed model must not take the maskless cache path: chunked == stock sdpa one-shot."""
    from transformers import DynamicCache

    config = MistralConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=8,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=VARLEN_SDPA).eval()
    sdpa = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    sdpa.load_state_dict(model.state_dict())
    input_ids = torch.randint(10, 500, (1, 30), generator=torch.Generator().manual_seed(1))
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        expected = sdpa(input_ids=input_ids, use_cache=False).logits[0]
        chunks = [
            model(
                input_ids=input_ids[:, a:b],
                position_ids=torch.arange(a, b)[None],
                past_key_values=cache,
                use_cache=True,
            ).logits[0]
            for a, b in ((0, 12), (12, 25), (25, 30))
        ]
    torch.testing.assert_close(torch.cat(chunks), expected, rtol=1e-4, atol=1e-4)
