"""Next-token choice per request: greedy, or temperature + nucleus (top-p) with its own RNG.

Each request owns a `torch.Generator` seeded from its `seed`, and sampling runs on CPU over a
float32 copy of that request's logits row, so a seeded request draws the same tokens whether
it is decoded alone or batched with others, and on CPU or GPU.
"""

from __future__ import annotations

import secrets

import torch

from gpu_runtime.serving.types import SamplingParams


def make_generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed if seed is not None else secrets.randbits(63))
    return generator


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero all but the smallest set of most likely tokens whose mass reaches top_p; renormalize.

    probs: [V] summing to 1. The most likely token always survives.
    """
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(descending=True)  # [V]
    mass_before = sorted_probs.cumsum(0) - sorted_probs  # [V] mass of strictly better tokens
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
    kept = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return kept / kept.sum()


def sample_next_token(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator
) -> int:
    """logits: [V] for one request → the chosen token id."""
    logits = logits.detach().float().cpu()
    if params.temperature == 0.0:
        return int(logits.argmax())
    probs = torch.softmax(logits / params.temperature, dim=-1)
    probs = top_p_filter(probs, params.top_p)
    return int(torch.multinomial(probs, 1, generator=generator))
