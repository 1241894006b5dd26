"""Which RoPE methods give a prompt the same logits whether it runs in one forward or in
chunks over a KV cache (what the serving engine's chunked prefill does), and that the default
is one of them: ``LENGTH_DEPENDENT_ROPE_METHODS`` is measured here, not assumed."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from gpu_runtime.contract import DEFAULT_ROPE_METHOD, LENGTH_DEPENDENT_ROPE_METHODS, ROPE_METHODS
from gpu_runtime.registry import load_model
from gpu_runtime.tiny import build_tiny_model_dir

ORIGINAL, TARGET, PROMPT, FIRST_CHUNK = 64, 256, 200, 96


@pytest.fixture(scope="module")
def short_base(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny-64-rope") / "model"
    return str(build_tiny_model_dir(path, seed=4, max_position_embeddings=ORIGINAL))


def _last_logits(model, ids: torch.Tensor, split: int | None) -> torch.Tensor:
    """Logits at the prompt's last position: one forward ([1, PROMPT]) or two over a cache."""
    with torch.no_grad():
        if split is None:
            return model(input_ids=ids).logits[0, -1]
        cache = DynamicCache(config=model.config)
        model(input_ids=ids[:, :split], past_key_values=cache, use_cache=True)
        positions = torch.arange(split, ids.shape[1]).unsqueeze(0)
        out = model(
            input_ids=ids[:, split:],
            past_key_values=cache,
            position_ids=positions,
            use_cache=True,
        )
        return out.logits[0, -1]


@pytest.mark.parametrize("method", ROPE_METHODS)
def test_chunked_prefill_equals_one_forward_unless_the_method_depends_on_length(short_base, method):
    torch.manual_seed(0)
    model = load_model(short_base, rope_method=method, target_context=TARGET).eval()
    ids = torch.randint(3, model.config.vocab_size, (1, PROMPT))
    whole = _last_logits(model, ids, None)
    model = load_model(short_base, rope_method=method, target_context=TARGET).eval()  # fresh
    chunked = _last_logits(model, ids, FIRST_CHUNK)
    gap = (whole - chunked).abs().max().item()
    # A random tiny model's logits are small (|max| ~0.6): float noise here is ~1e-7, a
    # length-dependent method moves them by ~1e-3.
    if method in LENGTH_DEPENDENT_ROPE_METHODS:
        assert gap > 1e-4, f"{method}: chunks agree ({gap:.2e}); it is not length-dependent"
    else:
        assert gap < 1e-5, f"{method}: chunked prefill moves the logits by {gap:.2e}"


def test_the_default_method_serves_a_prompt_in_chunks_as_in_one_forward():
    assert DEFAULT_ROPE_METHOD in ROPE_METHODS
    assert DEFAULT_ROPE_METHOD not in LENGTH_DEPENDENT_ROPE_METHODS


def test_an_evaluation_can_prefill_in_chunks_as_served_and_gets_the_same_tokens(short_base):
    from gpu_runtime.context_eval import greedy_continuation

    model = load_model(short_base, rope_method=DEFAULT_ROPE_METHOD, target_context=TARGET)
    generator = torch.Generator().manual_seed(1)
    prompt = torch.randint(3, model.config.vocab_size, (PROMPT,), generator=generator).tolist()
    whole = greedy_continuation(model.eval(), prompt, max_new_tokens=6)
    for chunk in (64, 96, PROMPT):
        assert greedy_continuation(model, prompt, max_new_tokens=6, prefill_chunk=chunk) == whole
