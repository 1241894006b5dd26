"""gpu_runtime.context_eval on the tiny model: the suites run, their numbers mean what they say."""

from __future__ import annotations

import math

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from gpu_runtime import context_eval as ce


@pytest.fixture(scope="module")
def tiny(tiny_base_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_base_dir)


@pytest.mark.parametrize("length", [256, 512, 1024])
@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_a_passkey_prompt_has_about_the_asked_length_and_holds_the_key(tiny, length, depth):
    _, tokenizer = tiny
    case = ce.passkey_case(tokenizer, length, depth, "48213")
    assert 0.7 * length <= len(case.prompt_ids) <= length + 8
    text = tokenizer.decode(case.prompt_ids)
    assert text.count("48213") == 2 and text.rstrip().endswith("The pass key is")
    # The key sits where asked: its share of the text before it follows the depth.
    before = text.index("48213") / len(text)
    assert abs(before - depth) < 0.35


def test_a_length_shorter_than_the_fixed_part_is_refused(tiny):
    with pytest.raises(ValueError, match="too short for a passkey prompt"):
        ce.passkey_case(tiny[1], 64, 0.5, "48213")


def test_passkey_grid_shape_and_a_random_model_finds_nothing(tiny):
    model, tokenizer = tiny
    seen = []
    grid = ce.passkey_grid(
        model, tokenizer, [256, 512], [0.25, 0.75], 2, 0, lambda d, t: seen.append((d, t))
    )
    assert grid["lengths"] == [256, 512] and grid["depths"] == [0.25, 0.75]
    assert len(grid["accuracy"]) == 2 and all(len(row) == 2 for row in grid["accuracy"])
    assert grid["overall"] == 0.0  # random weights: no 5-digit key comes back
    assert seen[-1] == (8, 8) and [d for d, _ in seen] == list(range(1, 9))


def test_greedy_continuation_matches_generate(tiny):
    model, tokenizer = tiny
    ids = tokenizer("the model answers the question", return_tensors="pt").input_ids
    expected = model.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1] :].tolist()
    assert ce.greedy_continuation(model, ids[0].tolist(), 6) == expected


def test_perplexity_by_length_equals_the_plain_loss(tiny):
    import torch

    model, tokenizer = tiny
    ids = ce.long_text_ids(tokenizer, 96)
    assert len(ids) == 96
    result = ce.perplexity_by_length(model, ids, [32, 96])
    with torch.no_grad():
        plain = model(input_ids=torch.tensor([ids[:32]]), labels=torch.tensor([ids[:32]])).loss
    assert math.isclose(result["perplexity"][0], math.exp(float(plain)), rel_tol=1e-4)
    assert result["lengths"] == [32, 96] and all(p > 1 for p in result["perplexity"])


def test_effective_context_is_the_longest_length_every_shorter_one_meets():
    lengths, scores = [1024, 2048, 4096, 8192], [1.0, 0.9, 0.5, 0.95]
    summary = ce.effective_context(lengths, scores)
    assert summary["absolute"] == 2048  # 4096 fails, so 8192's recovery does not count
    assert summary["relative"] == 2048  # bar 0.9 x 1.0
    assert ce.effective_context([1024], [0.2])["absolute"] is None
    assert ce.effective_context([512, 1024], [0.5, 0.46])["relative"] == 1024  # 0.46 >= 0.45


def test_the_heatmap_is_a_png(tmp_path):
    grid = {"lengths": [64, 128], "depths": [0.1, 0.9], "accuracy": [[1.0, 0.5], [0.0, 0.25]]}
    path = ce.heatmap_png(grid, tmp_path / "h.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
