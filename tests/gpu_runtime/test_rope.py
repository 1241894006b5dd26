"""RoPE extension survives save/load and really changes inference beyond the old context."""

from __future__ import annotations

import pytest
import torch

from gpu_runtime.registry import load_model
from gpu_runtime.rope import ROPE_METHODS, apply_rope_scaling, rope_parameters_for

ORIGINAL = 32  # short_context_model_dir's max_position_embeddings
TARGET = 128
LENGTH = 80  # > ORIGINAL: positions the base model never saw


def _logits(model, input_ids):
    with torch.no_grad():
        return model(input_ids=input_ids, use_cache=False).logits


@pytest.fixture(scope="module")
def long_input():
    return torch.randint(10, 500, (1, LENGTH), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def base_logits(short_context_model_dir, long_input):
    return _logits(load_model(str(short_context_model_dir)).eval(), long_input)


@pytest.mark.parametrize("method", ROPE_METHODS)
def test_scaling_round_trips_and_changes_inference(
    method, short_context_model_dir, long_input, base_logits, tmp_path
):
    extended = load_model(
        str(short_context_model_dir), rope_method=method, target_context=TARGET
    ).eval()
    extended.save_pretrained(tmp_path)
    reloaded = load_model(str(tmp_path)).eval()  # no rope arguments: the config carries it

    assert reloaded.config.rope_parameters == extended.config.rope_parameters
    assert reloaded.config.max_position_embeddings == extended.config.max_position_embeddings
    assert reloaded.config.longtune_context["rope_method"] == method
    assert reloaded.config.longtune_context["original_length"] == ORIGINAL

    scaled = _logits(extended, long_input)
    torch.testing.assert_close(_logits(reloaded, long_input), scaled, rtol=0, atol=0)
    if method == "none":
        torch.testing.assert_close(scaled, base_logits)
    else:
        assert (scaled - base_logits).abs().max() > 1e-3


@pytest.mark.parametrize("method", [m for m in ROPE_METHODS if m != "none"])
def test_hf_rope_type_and_factor(method, short_context_model_dir):
    config = load_model(
        str(short_context_model_dir), rope_method=method, target_context=TARGET
    ).config
    params = config.rope_parameters
    if method == "ntk":
        assert params["rope_type"] == "default" and params["rope_theta"] > 10000.0
    else:
        assert params["rope_type"] == method and params["factor"] == TARGET / ORIGINAL
    expected_max = ORIGINAL if method == "dynamic" else TARGET
    assert config.max_position_embeddings == expected_max


def test_extending_an_extended_model_measures_from_the_original(short_context_model_dir, tmp_path):
    once = load_model(str(short_context_model_dir), rope_method="yarn", target_context=64)
    once.save_pretrained(tmp_path)
    twice = load_model(str(tmp_path), rope_method="yarn", target_context=TARGET).config
    assert twice.rope_parameters["factor"] == TARGET / ORIGINAL
    assert twice.rope_parameters["original_max_position_embeddings"] == ORIGINAL


def test_rejects_unknown_method_and_shrinking():
    with pytest.raises(ValueError, match="unknown rope scaling method"):
        rope_parameters_for("cubic", 2.0, 32, 10000.0)
    with pytest.raises(ValueError, match=">= 1"):
        rope_parameters_for("linear", 0.5, 32, 10000.0)


def test_apply_rope_scaling_does_not_mutate_input(short_context_model_dir):
    config = load_model(str(short_context_model_dir)).config
    before = config.to_dict()
    apply_rope_scaling(config, "linear", TARGET)
    assert config.to_dict() == before
