"""Artifacts reload into exactly the model that was trained, RoPE extension included."""

from __future__ import annotations

import json

import pytest
import torch

from gpu_runtime.contract import TrainConfig
from gpu_runtime.output import MetricsCSV, load_trained_model, read_metrics, save_artifact
from gpu_runtime.registry import load_model, load_tokenizer
from gpu_runtime.tiny import build_tiny_model_dir
from gpu_runtime.train import build_model

ORIGINAL_CONTEXT = 32


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("base") / "tiny"
    return str(build_tiny_model_dir(path, max_position_embeddings=ORIGINAL_CONTEXT))


def _config(base_model: str, tmp_path, method: str, **extra) -> TrainConfig:
    return TrainConfig(
        base_model=base_model,
        output_dir=str(tmp_path),
        context_length=4 * ORIGINAL_CONTEXT,
        method=method,
        activation_checkpointing=False,
        **extra,
    )


def _long_input(length: int = 4 * ORIGINAL_CONTEXT) -> torch.Tensor:
    return (
        torch.arange(3, 3 + length).remainder(500).unsqueeze(0)
    )  # [1, L], past the original context


def _perturb_trainable(model: torch.nn.Module) -> None:
    """LoRA B starts at zero (adapter = no-op); give every trainable tensor a visible value."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("method", ["lora", "full"])
def test_artifact_reloads_to_identical_logits_with_rope_scaling(base_model, tmp_path, method):
    config = _config(base_model, tmp_path, method, rope_method="yarn")
    model = build_model(config, torch.device("cpu"), torch.float32)
    _perturb_trainable(model)
    ids = _long_input()
    expected = _logits(model, ids)

    artifact = save_artifact(
        model, load_tokenizer(base_model), tmp_path / "final", method=method, base_model=base_model
    )
    saved = json.loads((artifact / "config.json").read_text())
    assert (
        saved["rope_parameters"]["rope_type"] == "yarn"
        and saved["rope_parameters"]["factor"] == 4.0
    )
    assert saved["max_position_embeddings"] == 4 * ORIGINAL_CONTEXT
    assert saved["longtune_context"]["target_length"] == 4 * ORIGINAL_CONTEXT
    if method == "lora":
        adapter = json.loads((artifact / "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == base_model
        assert not (artifact / "model.safetensors").exists()  # only the adapter is shipped

    reloaded, tokenizer = load_trained_model(artifact, attn_implementation="sdpa")
    assert torch.allclose(_logits(reloaded, ids), expected, atol=1e-5)
    assert tokenizer.chat_template  # the tokenizer travels with the artifact

    # The scaling is really in effect: the unscaled base weights disagree far past 32 tokens.
    unscaled = load_model(base_model, dtype=torch.float32, attn_implementation="sdpa")
    if method == "full":
        unscaled.load_state_dict(reloaded.state_dict())
    else:
        unscaled = type(reloaded).from_pretrained(unscaled, artifact)
    assert not torch.allclose(_logits(unscaled, ids)[:, -1], expected[:, -1], atol=1e-3)


def test_merged_lora_matches_unmerged(base_model, tmp_path):
    config = _config(base_model, tmp_path, "lora", rope_method="linear")
    model = build_model(config, torch.device("cpu"), torch.float32)
    _perturb_trainable(model)
    artifact = save_artifact(
        model, load_tokenizer(base_model), tmp_path / "final", method="lora", base_model=base_model
    )
    ids = _long_input(40)
    merged, _ = load_trained_model(artifact, merge=True)
    assert not hasattr(merged, "peft_config")
    assert torch.allclose(_logits(merged, ids), _logits(model, ids), atol=1e-5)


def test_metrics_csv_drops_rows_of_an_interrupted_attempt_on_resume(tmp_path):
    path = tmp_path / "metrics.csv"
    writer = MetricsCSV(path)
    for step in (1, 2, 3, 4):
        writer.append(
            {
                "step": step,
                "loss": 5.0 - step,
                "lr": 0.1,
                "grad_norm": 1.0,
                "tokens_per_second": 9.0,
            }
        )
    assert path.read_text().splitlines()[0] == (
        "step,loss,lr,grad_norm,tokens_per_second,valid_loss"
    )

    resumed = MetricsCSV(path, resume_step=2)  # the checkpoint was at step 2; 3-4 are redone
    resumed.append({"step": 3, "loss": 1.5, "lr": 0.1, "grad_norm": 1.0, "tokens_per_second": 9.0})

    rows = read_metrics(path)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["loss"] for r in rows] == [4.0, 3.0, 1.5]


def test_metrics_csv_valid_loss_column_and_resume_from_an_older_file(tmp_path):
    path = tmp_path / "metrics.csv"
    # A file written before the valid_loss column existed (a run resumed after an upgrade).
    path.write_text(
        "step,loss,lr,grad_norm,tokens_per_second\n1,4.0,0.1,1.0,9.0\n2,3.0,0.1,1.0,9.0\n"
    )

    resumed = MetricsCSV(path, resume_step=1)
    resumed.append({"step": 2, "loss": 2.5, "lr": 0.1, "grad_norm": 1.0, "tokens_per_second": 9.0})
    resumed.append(
        {"step": 3, "loss": 2.0, "lr": 0.1, "grad_norm": 1.0, "tokens_per_second": 9.0,
         "valid_loss": 2.25}
    )  # fmt: skip

    assert path.read_text().splitlines()[:2] == [
        "step,loss,lr,grad_norm,tokens_per_second,valid_loss",
        "1,4.0,0.1,1.0,9.0,",
    ]
    rows = read_metrics(path)
    assert [(r["step"], r["loss"], r["valid_loss"]) for r in rows] == [
        (1, 4.0, None),
        (2, 2.5, None),
        (3, 2.0, 2.25),
    ]
