"""One context spec: applied verbatim, recorded in the saved config, read back by serving, and
checked in ONE place with ONE code (gpu_runtime.contract.ContextSpec)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from gpu_runtime.contract import CONTEXT_LENGTH_EXCEEDED, ContextSpec, TrainConfig
from gpu_runtime.registry import load_model, load_tokenizer
from gpu_runtime.rope import apply_context, context_of
from gpu_runtime.serving import (
    ContextLengthError,
    EngineConfig,
    GenerationRequest,
    InferenceEngine,
    SamplingParams,
)
from gpu_runtime.train import build_model

REPO = Path(__file__).resolve().parents[2]
ORIGINAL = 32  # short_context_model_dir


def test_overflow_is_exact_at_the_target():
    spec = ContextSpec.plan(original_length=64, target_length=256, rope_method="yarn")
    assert spec == ContextSpec(64, 256, "yarn", 4.0)
    assert spec.overflow(200, 56) is None
    assert "maximum context length is 256 tokens" in spec.overflow(200, 57)
    assert ContextSpec.from_dict(spec.to_dict()) == spec


def test_a_given_spec_is_applied_verbatim(short_context_model_dir, tmp_path):
    # 3.0 is not target / original (4.0): the factor must be the spec's, not recomputed.
    spec = ContextSpec(ORIGINAL, 4 * ORIGINAL, "linear", 3.0)
    config = TrainConfig(
        base_model=str(short_context_model_dir),
        output_dir=str(tmp_path),
        **TrainConfig.context_fields(spec),
        method="full",
        activation_checkpointing=False,
    )
    model = build_model(config, torch.device("cpu"), torch.float32)
    assert model.config.rope_parameters["factor"] == 3.0
    assert context_of(model.config) == spec
    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved[ContextSpec.CONFIG_KEY] == spec.to_dict()
    assert ContextSpec.LEGACY_CONFIG_KEY not in saved
    assert ContextSpec.of_model_config(saved) == spec


def test_a_spec_for_another_base_is_refused(short_context_model_dir):
    with pytest.raises(ValueError, match="original context is 32"):
        load_model(str(short_context_model_dir), context=ContextSpec.plan(
            original_length=64, target_length=256, rope_method="yarn"
        ))  # fmt: skip


def test_models_saved_with_the_legacy_key_read_back_the_same_spec(short_context_model_dir):
    legacy = {
        "max_position_embeddings": 128,
        "longtune_rope": {"method": "yarn", "factor": 4.0, "original_context_length": 32,
                          "context_length": 128, "base_rope_theta": 10000.0},
    }  # fmt: skip
    assert ContextSpec.of_model_config(legacy) == ContextSpec(32, 128, "yarn", 4.0)
    assert ContextSpec.of_model_config({"max_position_embeddings": 77}) == ContextSpec.native(77)


def test_ntk_extension_of_an_extended_model_starts_from_the_base_theta(short_context_model_dir):
    base = load_model(str(short_context_model_dir)).config
    once = apply_context(base, ContextSpec.plan(original_length=32, target_length=64,
                                                rope_method="ntk"))  # fmt: skip
    twice = apply_context(once, ContextSpec.plan(original_length=32, target_length=128,
                                                 rope_method="ntk"))  # fmt: skip
    direct = apply_context(base, ContextSpec.plan(original_length=32, target_length=128,
                                                  rope_method="ntk"))  # fmt: skip
    assert twice.rope_parameters["rope_theta"] == pytest.approx(
        direct.rope_parameters["rope_theta"], rel=1e-9
    )


def test_the_engine_serves_up_to_the_spec_target_not_max_position_embeddings(
    short_context_model_dir,
):
    # Dynamic NTK keeps max_position_embeddings at the original (HF measures length against
    # it), so only the recorded spec says the model is served at 4x.
    model = load_model(str(short_context_model_dir), rope_method="dynamic", target_context=128)
    assert model.config.max_position_embeddings == ORIGINAL
    engine = InferenceEngine(
        EngineConfig(base_model=str(short_context_model_dir), device="cpu"),
        model=model,
        tokenizer=load_tokenizer(str(short_context_model_dir)),
    )
    try:
        assert engine.context() == ContextSpec(ORIGINAL, 128, "dynamic", 4.0)
        fits = GenerationRequest(
            prompt_token_ids=[5] * 100,
            sampling=SamplingParams(max_tokens=28, temperature=0.0, ignore_eos=True),
        )
        assert len(engine.generate(fits, timeout=120).token_ids) == 28
        with pytest.raises(ContextLengthError) as error:
            engine.submit(
                GenerationRequest(
                    prompt_token_ids=[5] * 100, sampling=SamplingParams(max_tokens=29)
                )
            )
        assert (error.value.code, error.value.field) == (CONTEXT_LENGTH_EXCEEDED, "max_tokens")
    finally:
        engine.shutdown()


# --------------------------------------------------------------------------- one check, one code

CODE_LITERAL = CONTEXT_LENGTH_EXCEEDED
TIERS = ("gpu_runtime", "platform", "workers")


def context_rule_violations(root: Path) -> list[str]:
    """Sources of the three tiers that spell the error code themselves (only contract.py may)
    or run the fits check (only the engine may call ContextSpec.overflow)."""
    found = []
    paths = sorted(
        p for tier in TIERS if (root / tier).is_dir() for p in (root / tier).rglob("*.py")
    )
    assert paths, f"no sources under {root}"
    for path in paths:
        relative = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(), filename=relative)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and node.value == CODE_LITERAL
                and relative != "gpu_runtime/contract.py"
            ):
                found.append(f"{relative}:{node.lineno}: spells {CODE_LITERAL!r}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "overflow"
                and relative != "gpu_runtime/serving/engine.py"
            ):
                found.append(f"{relative}:{node.lineno}: runs the fits check")
    return found


def test_one_fits_check_and_one_code_in_the_tiers():
    assert context_rule_violations(REPO) == []


def test_the_rule_catches_a_second_check(tmp_path):
    views = tmp_path / "platform" / "views.py"
    views.parent.mkdir()
    views.write_text(
        "def check(spec, n, m):\n"
        "    if spec.overflow(n, m):\n"
        "        raise ApiError(code='context_length_exceeded')\n"
    )
    assert context_rule_violations(tmp_path) == [
        "platform/views.py:2: runs the fits check",
        "platform/views.py:3: spells 'context_length_exceeded'",
    ]
