"""Greedy, temperature and nucleus sampling with per-request generators."""

from __future__ import annotations

import torch

from gpu_runtime.serving.sampling import make_generator, sample_next_token, top_p_filter
from gpu_runtime.serving.types import SamplingParams


def test_top_p_keeps_smallest_set_reaching_mass():
    probs = torch.tensor([0.1, 0.5, 0.3, 0.1])
    kept = top_p_filter(probs, 0.7)  # 0.5 + 0.3 reaches 0.7
    assert torch.allclose(kept, torch.tensor([0.0, 0.625, 0.375, 0.0]))
    assert torch.equal(top_p_filter(probs, 0.01), torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert torch.equal(top_p_filter(probs, 1.0), probs)


def test_greedy_ignores_generator_and_seeded_sampling_repeats():
    logits = torch.randn(50, generator=torch.Generator().manual_seed(0))
    greedy = SamplingParams(temperature=0.0)
    assert sample_next_token(logits, greedy, make_generator(1)) == int(logits.argmax())
    hot = SamplingParams(temperature=1.5, top_p=0.9)
    draws = [
        [sample_next_token(logits, hot, g) for _ in range(30)]
        for g in map(make_generator, (7, 7, 8))
    ]
    assert draws[0] == draws[1] and draws[0] != draws[2]


def test_top_p_never_samples_outside_nucleus():
    logits = torch.tensor([5.0, 4.0, -3.0, -3.0, -3.0])
    params = SamplingParams(temperature=1.0, top_p=0.9)
    generator = make_generator(0)
    assert {sample_next_token(logits, params, generator) for _ in range(200)} <= {0, 1}
