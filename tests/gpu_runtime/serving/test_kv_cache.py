"""Stacked left-padded caches and chunked prefill reproduce single-sequence logits."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from gpu_runtime.serving.kv_cache import cache_length, stack_caches, unstack_cache


def _prefill(model, ids: list[int], chunk: int) -> tuple[DynamicCache, torch.Tensor]:
    """Chunked prefill exactly as the engine runs it; returns (cache, logits of all positions)."""
    cache = DynamicCache(config=model.config)
    logits = []
    with torch.no_grad():
        for start in range(0, len(ids), chunk):
            end = min(start + chunk, len(ids))
            out = model(
                input_ids=torch.tensor([ids[start:end]]),
                position_ids=torch.arange(start, end)[None],
                past_key_values=cache,
                use_cache=True,
            )
            logits.append(out.logits)
    return cache, torch.cat(logits, dim=1)  # [1, L, V]


def test_chunked_prefill_logits_equal_one_shot(base_model):
    ids = list(range(5, 5 + 70))
    one_shot_cache, one_shot = _prefill(base_model, ids, chunk=len(ids))
    for chunk in (1, 16, 33):
        cache, chunked = _prefill(base_model, ids, chunk)
        torch.testing.assert_close(chunked, one_shot, rtol=1e-4, atol=1e-4)
        for (k1, v1), (k2, v2) in zip(
            [(layer.keys, layer.values) for layer in cache.layers],
            [(layer.keys, layer.values) for layer in one_shot_cache.layers],
            strict=True,
        ):
            torch.testing.assert_close(k1, k2, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(v1, v2, rtol=1e-4, atol=1e-4)


def test_batched_decode_over_left_padded_cache_equals_each_alone(base_model):
    prompts = [list(range(10, 17)), list(range(40, 60)), list(range(100, 103))]
    next_tokens = [7, 8, 9]
    caches = [_prefill(base_model, p, chunk=8)[0] for p in prompts]
    alone = []
    with torch.no_grad():
        for prompt, cache, token in zip(prompts, caches, next_tokens, strict=True):
            single = DynamicCache(
                [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
            )
            out = base_model(
                input_ids=torch.tensor([[token]]),
                position_ids=torch.tensor([[len(prompt)]]),
                past_key_values=single,
                use_cache=True,
            )
            alone.append(out.logits[0, -1])
        batched = stack_caches(caches)
        assert batched.pads == [13, 0, 17]
        assert batched.attention_mask.sum(1).tolist() == [7, 20, 3]
        out = base_model(
            input_ids=torch.tensor([[t] for t in next_tokens]),
            attention_mask=batched.extend_mask(),
            position_ids=torch.tensor([[len(p)] for p in prompts]),
            past_key_values=batched.cache,
            use_cache=True,
        )
    torch.testing.assert_close(out.logits[:, -1], torch.stack(alone), rtol=1e-4, atol=1e-4)
    # Unstacking strips the padding and keeps the decoded token's K/V.
    assert [cache_length(c) for c in unstack_cache(batched)] == [8, 21, 4]
