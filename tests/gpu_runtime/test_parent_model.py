"""Training from a fine-tuned model (TrainConfig.parent_model): the run starts from the parent's
weights (LoRA: its adapter, trained on; full: its full weights), on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gpu_runtime.contract import ContextSpec, TrainConfig
from gpu_runtime.tiny import build_tiny_model_dir
from gpu_runtime.train import build_model, train
from tests.gpu_runtime.test_train import (
    ORIGINAL_CONTEXT,
    Recorder,
    StopAt,
    make_config,
    repetitive_data,
)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("base") / "tiny"
    return str(build_tiny_model_dir(path, max_position_embeddings=ORIGINAL_CONTEXT))


@pytest.fixture(scope="module")
def lora_parent(base_model, tmp_path_factory):
    """A LoRA run of 12 steps at 2x the original context: (artifact dir, its step losses)."""
    recorder = Recorder()
    out = tmp_path_factory.mktemp("lora-parent")
    result = train(
        make_config(base_model, out, lora_r=4, lora_alpha=8), repetitive_data(), [recorder]
    )
    return result.artifact_dir, recorder.losses


def planned(target: int) -> dict:
    """The TrainConfig fields of a job's ContextSpec at ``target`` from the tiny base."""
    spec = ContextSpec.plan(original_length=ORIGINAL_CONTEXT, target_length=target)
    return TrainConfig.context_fields(spec)


def test_lora_child_starts_from_the_parent_adapter_and_trains_it_on(
    base_model, lora_parent, tmp_path
):
    from peft import get_peft_model_state_dict

    parent_dir, parent_losses = lora_parent
    config = make_config(
        base_model, tmp_path / "child", parent_model=str(parent_dir), lora_r=4, lora_alpha=8
    )
    model = build_model(config, torch.device("cpu"), torch.float32)
    saved = load_file(str(Path(parent_dir) / "adapter_model.safetensors"))
    at_step_0 = get_peft_model_state_dict(model)
    assert set(saved) == set(at_step_0) and saved
    for key, value in saved.items():
        assert torch.equal(at_step_0[key], value), key  # exactly the parent's adapter
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)

    recorder = Recorder()
    result = train(config, repetitive_data(), [recorder])
    # Step 1's loss is measured before the first update: the parent's weights on its own data.
    # From the base it would be the parent's first loss (same seed, same rows); from the
    # parent's adapter it continues the parent's descent: below the parent's last step.
    assert recorder.losses[0] < parent_losses[-1] < parent_losses[0] - 0.5
    child = load_file(str(Path(result.artifact_dir) / "adapter_model.safetensors"))
    assert set(child) == set(saved)
    assert any(not torch.equal(child[k], saved[k]) for k in saved)  # it trained on


def test_a_stopped_child_resumes_exactly_from_its_own_checkpoint(base_model, lora_parent, tmp_path):
    """A re-queued attempt (watchdog) loads the parent's adapter again, then its checkpoint over
    it: the loss curve is the uninterrupted one."""
    parent_dir, _ = lora_parent
    values = {"parent_model": str(parent_dir), "lora_r": 4, "lora_alpha": 8, "max_steps": 4}
    uninterrupted, first, second = Recorder(), Recorder(), Recorder()
    train(make_config(base_model, tmp_path / "a", **values), repetitive_data(), [uninterrupted])
    stopped = train(
        make_config(base_model, tmp_path / "b", **values),
        repetitive_data(),
        [first, StopAt(2, "return")],
    )
    assert stopped.status == "stopped" and stopped.steps == 2
    train(make_config(base_model, tmp_path / "b", **values), repetitive_data(), [second])
    assert [m.step for m in second.steps] == [3, 4]
    combined = first.losses + second.losses
    assert combined == pytest.approx(uninterrupted.losses, abs=1e-6, rel=0)


def test_lora_child_at_a_longer_context_extends_from_the_original(
    base_model, lora_parent, tmp_path
):
    parent_dir, _ = lora_parent
    config = make_config(
        base_model,
        tmp_path / "longer",
        parent_model=str(parent_dir),
        lora_r=4,
        lora_alpha=8,
        max_steps=2,
        **planned(4 * ORIGINAL_CONTEXT),
    )
    result = train(config, repetitive_data(), [])
    written = json.loads((Path(result.artifact_dir) / "config.json").read_text())
    assert written[ContextSpec.CONFIG_KEY] == {
        "original_length": ORIGINAL_CONTEXT,
        "target_length": 4 * ORIGINAL_CONTEXT,
        "rope_method": config.rope_method,
        "rope_factor": 4.0,
    }  # x4 of the original, not x2 of the parent's x2


@pytest.mark.parametrize(
    ("override", "field"),
    [({"lora_r": 8}, "lora_r"), ({"lora_alpha": 16}, "lora_alpha"),
     ({"lora_target_modules": ["q_proj"]}, "lora_target_modules")],
)  # fmt: skip
def test_a_lora_shape_other_than_the_parent_adapter_is_refused_naming_the_field(
    base_model, lora_parent, tmp_path, override, field
):
    parent_dir, _ = lora_parent
    values = {"lora_r": 4, "lora_alpha": 8, **override}
    config = make_config(base_model, tmp_path / "bad", parent_model=str(parent_dir), **values)
    with pytest.raises(ValueError, match=f"^{field}:"):
        build_model(config, torch.device("cpu"), torch.float32)


def test_full_child_starts_from_the_parent_full_weights(base_model, tmp_path):
    parent_recorder, child_recorder = Recorder(), Recorder()
    parent = train(
        make_config(base_model, tmp_path / "parent", method="full", learning_rate=1e-3),
        repetitive_data(),
        [parent_recorder],
    )
    config = make_config(
        base_model,
        tmp_path / "child",
        method="full",
        learning_rate=1e-3,
        parent_model=str(parent.artifact_dir),
        max_steps=2,
    )
    model = build_model(config, torch.device("cpu"), torch.float32)
    saved = load_file(str(Path(parent.artifact_dir) / "model.safetensors"))
    state = model.state_dict()
    for key, value in saved.items():
        assert torch.equal(state[key], value.to(state[key].dtype)), key
    train(config, repetitive_data(), [child_recorder])
    assert child_recorder.losses[0] < parent_recorder.losses[-1] < parent_recorder.losses[0] - 0.5


def test_parent_model_must_be_a_path_or_null():
    with pytest.raises(ValueError, match="^parent_model:"):
        TrainConfig(base_model="m", output_dir="o", context_length=64, parent_model="")
    config = TrainConfig(base_model="m", output_dir="o", context_length=64, parent_model="p")
    assert TrainConfig.from_dict(config.to_dict()).parent_model == "p"
