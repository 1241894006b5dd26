"""The training loop on the tiny model: it learns, stops, resumes exactly and saves what it says."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gpu_runtime import attention
from gpu_runtime.callbacks import Control, StepMetrics, StopTraining, StopWhen
from gpu_runtime.checkpoint import latest_checkpoint, load_checkpoint
from gpu_runtime.contract import ATTENTION_IMPLEMENTATIONS, TrainConfig
from gpu_runtime.output import load_trained_model, read_metrics
from gpu_runtime.rope import DEFAULT_ROPE_METHOD, head_dim, rope_parameters_for
from gpu_runtime.tiny import build_tiny_model_dir
from gpu_runtime.train import lr_multiplier, train

ORIGINAL_CONTEXT = 64
SENTENCE = "The quick river runs to the city and the light is warm."


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("base") / "tiny"
    return str(build_tiny_model_dir(path, max_position_embeddings=ORIGINAL_CONTEXT))


def repetitive_data(n: int = 24) -> list[dict]:
    """Text and chat examples saying the same thing: easy to learn, so loss must fall."""
    chat = {
        "messages": [
            {"role": "user", "content": "Where does the river run?"},
            {"role": "assistant", "content": SENTENCE},
        ]
    }
    return [({"text": SENTENCE} if i % 2 else chat) for i in range(n)]


def make_config(base_model: str, output_dir, **overrides) -> TrainConfig:
    values = {
        "base_model": base_model,
        "output_dir": str(output_dir),
        "context_length": 2 * ORIGINAL_CONTEXT,  # a 2x RoPE extension
        "learning_rate": 1e-2,
        "lr_schedule": "constant",
        "max_steps": 12,
        "lora_dropout": 0.0,
        "checkpoint_every_steps": 0,
    }
    values.update(overrides)
    return TrainConfig(**values)


class Recorder:
    """Keeps everything the loop reports."""

    def __init__(self) -> None:
        self.steps: list[StepMetrics] = []
        self.events: list[tuple[str, dict]] = []
        self.checkpoints: list[tuple[int, str]] = []

    def on_step(self, metrics: StepMetrics) -> None:
        self.steps.append(metrics)

    def on_event(self, name, payload) -> None:
        self.events.append((name, dict(payload)))

    def on_checkpoint(self, step, path) -> None:
        self.checkpoints.append((step, str(path)))

    @property
    def losses(self) -> list[float]:
        return [m.loss for m in self.steps]


# --------------------------------------------------------------------------- config


def test_config_round_trips_through_json():
    config = TrainConfig(
        base_model="s3://models/llama",
        output_dir="/tmp/run",
        context_length=32768,
        method="full",
        rope_method="linear",
        lora_target_modules=["q_proj", "v_proj"],
        max_steps=10,
    )
    again = TrainConfig.from_json(config.to_json())
    assert again == config
    assert again.tokens_per_micro_batch == 32768
    assert json.loads(json.dumps(config.to_dict())) == config.to_dict()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "qlora"),
        ("rope_method", "xpos"),
        ("context_length", 0),
        ("learning_rate", -1.0),
        ("lr_schedule", "step"),
        ("lora_r", 0),
        ("lora_dropout", 1.0),
        ("lora_target_modules", []),
        ("max_steps", 0),
        ("gradient_accumulation_steps", 0),
        ("micro_batch_size", True),
        ("attn_implementation", "flash3"),
        ("dtype", "int8"),
        ("loss_chunk_size", 0),
        ("warmup_steps", -1),
        ("keep_checkpoints", 0),
        ("mlp_chunk_size", -1),
        ("mlp_chunk_size", 1.5),
    ],
)
def test_config_validation_names_the_field(field, value):
    values = {"base_model": "m", "output_dir": "o", "context_length": 128, field: value}
    with pytest.raises(ValueError, match=rf"^{field}: "):
        TrainConfig(**values)


def test_config_from_dict_rejects_unknown_and_missing_fields():
    with pytest.raises(ValueError, match="unknown train config field.*learning_rte"):
        TrainConfig.from_dict(
            {"base_model": "m", "output_dir": "o", "context_length": 8, "learning_rte": 1}
        )
    with pytest.raises(ValueError, match="missing required.*context_length"):
        TrainConfig.from_dict({"base_model": "m", "output_dir": "o"})


def test_config_defaults():
    config = TrainConfig(base_model="m", output_dir="o", context_length=4096)
    assert config.rope_method == DEFAULT_ROPE_METHOD
    assert config.lora_target_modules == ["all-linear"]
    assert config.attn_implementation == "auto" and config.dtype == "auto"
    # config.py is torch-free and mirrors the attention module's names.
    assert set(ATTENTION_IMPLEMENTATIONS) == {"auto", *attention.KNOWN_IMPLEMENTATIONS}


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_lr_schedule_warms_up_then_decays(schedule):
    factors = [lr_multiplier(s, warmup=4, total=20, schedule=schedule) for s in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0
    if schedule == "constant":
        assert factors[-1] == 1.0
    else:
        assert all(a >= b for a, b in zip(factors[4:], factors[5:], strict=False))
        assert 0 < factors[-1] < 0.2


# --------------------------------------------------------------------------- learning


@pytest.mark.parametrize(
    ("method", "overrides"),
    [
        # LoRA with checkpointed layers and activations offloaded through save_on_cpu
        ("lora", {"activation_checkpointing": True, "offload_activations": True}),
        ("full", {"learning_rate": 3e-3, "activation_checkpointing": False, "micro_batch_size": 2}),
    ],
)
def test_loss_decreases_on_repetitive_data(base_model, tmp_path, method, overrides):
    recorder = Recorder()
    config = make_config(base_model, tmp_path / "run", method=method, **overrides)

    result = train(config, repetitive_data(), [recorder])

    assert result.status == "completed" and result.steps == 12
    losses = recorder.losses
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < losses[0] - 0.75, losses
    assert result.final_loss == losses[-1]
    last = recorder.steps[-1]
    assert last.step == last.total_steps == 12
    assert last.tokens_per_second > 0 and last.peak_memory_bytes > 0 and last.grad_norm > 0
    names = [name for name, _ in recorder.events]
    assert names[0] == "data_packed" and names[-1] == "completed"
    # metrics.csv mirrors what the callbacks saw
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert [r["loss"] for r in rows] == pytest.approx(losses, abs=1e-9)
    # no eval_data: no validation anywhere
    assert all(m.valid_loss is None for m in recorder.steps)
    assert all(r["valid_loss"] is None for r in rows)
    assert result.valid_loss is None


def independent_loss(artifact_dir, examples: list[dict], seq_len: int) -> float:
    """Token-mean next-token loss of the saved model on `examples` packed as training packs
    them, recomputed without the training code: every packed document runs on its own through
    the stock model (plain SDPA, default positions) with full logits and F.cross_entropy."""
    from gpu_runtime.data import pack_dataset

    model, tokenizer = load_trained_model(artifact_dir, attn_implementation="sdpa")
    model.eval()
    rows, _ = pack_dataset(examples, tokenizer, seq_len)
    loss_sum, counted = 0.0, 0
    with torch.no_grad():
        for row in rows:
            starts = (row.position_ids == 0).nonzero().flatten().tolist() + [len(row)]
            for start, end in zip(starts, starts[1:], strict=False):
                logits = model(input_ids=row.input_ids[start:end].unsqueeze(0)).logits[0]
                targets = row.labels[start + 1 : end]  # [T-1]: token t predicts t + 1
                loss_sum += torch.nn.functional.cross_entropy(
                    logits[:-1].double(), targets, ignore_index=-100, reduction="sum"
                ).item()
                counted += int((targets != -100).sum())
    return loss_sum / counted


def test_validation_loss_is_reported_and_matches_an_independent_computation(base_model, tmp_path):
    recorder = Recorder()
    config = make_config(base_model, tmp_path / "run", max_steps=6, eval_every_steps=4)
    validation = repetitive_data(10)  # the training distribution: its loss must fall too

    result = train(config, repetitive_data(), [recorder], eval_data=validation)

    valid = {m.step: m.valid_loss for m in recorder.steps}
    assert [step for step, loss in valid.items() if loss is not None] == [4, 6]  # every 4 + end
    assert all(math.isfinite(valid[s]) for s in (4, 6))
    assert result.valid_loss == valid[6]
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [r["valid_loss"] for r in rows] == pytest.approx(list(valid.values()), abs=1e-9)
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    assert summary["valid_loss"] == valid[6]
    assert summary["validation_packing"]["sequences"] >= 1

    # Training lowered it: the same validation pass on a (practically) untrained run is higher.
    untrained = make_config(base_model, tmp_path / "untrained", max_steps=1, learning_rate=1e-9)
    before = train(untrained, repetitive_data(), eval_data=validation).valid_loss
    assert valid[6] < before - 0.5, (before, valid)
    assert independent_loss(result.artifact_dir, validation, config.context_length) == (
        pytest.approx(valid[6], rel=1e-4)
    )


def test_training_reads_jsonl_and_reports_bad_lines(base_model, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"text": SENTENCE}) + "\n{not json\n")
    with pytest.raises(ValueError, match="line 2"):
        train(make_config(base_model, tmp_path / "run"), data)


def test_too_little_data_for_one_step_is_a_clear_error(base_model, tmp_path):
    config = make_config(
        base_model, tmp_path / "run", micro_batch_size=4, gradient_accumulation_steps=4
    )
    with pytest.raises(ValueError, match="fewer than one optimizer step"):
        train(config, repetitive_data(4))


# --------------------------------------------------------------------------- stop + resume


class StopAt:
    def __init__(self, step: int, how: str) -> None:
        self.step, self.how = step, how

    def on_step(self, metrics: StepMetrics):
        if metrics.step == self.step:
            if self.how == "raise":
                raise StopTraining("user cancelled")
            return Control.STOP
        return None


@pytest.mark.parametrize("how", ["raise", "return"])
def test_stop_then_resume_reproduces_the_uninterrupted_loss_curve(base_model, tmp_path, how):
    # Dropout on (RNG state must be restored), accumulation and an epoch boundary inside the run
    # (data cursor), warmup + cosine (scheduler state), AdamW moments (optimizer state).
    overrides = {
        "lora_dropout": 0.1,
        "gradient_accumulation_steps": 2,
        "lr_schedule": "cosine",
        "warmup_steps": 2,
        "max_steps": 8,
        "learning_rate": 5e-3,
    }
    data = repetitive_data(20)  # 5 packed rows -> 2 steps per epoch
    uninterrupted = Recorder()
    train(make_config(base_model, tmp_path / "a", **overrides), data, [uninterrupted])

    first = Recorder()
    stopped = train(
        make_config(base_model, tmp_path / "b", **overrides), data, [first, StopAt(3, how)]
    )
    assert stopped.status == "stopped" and stopped.steps == 3 and stopped.artifact_dir is None
    assert stopped.checkpoint_dir is not None and stopped.checkpoint_dir.name == "step-000003"
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "latest").state.step == 3
    assert first.checkpoints == [(3, str(stopped.checkpoint_dir))]

    second = Recorder()
    resumed = train(make_config(base_model, tmp_path / "b", **overrides), data, [second])

    assert resumed.status == "completed" and resumed.steps == 8
    resumed_epoch = uninterrupted.steps[2].epoch
    assert (
        "resumed",
        {"path": str(stopped.checkpoint_dir), "step": 3, "epoch": resumed_epoch},
    ) in second.events
    assert [m.step for m in second.steps] == [4, 5, 6, 7, 8]
    assert [m.epoch for m in second.steps] == [m.epoch for m in uninterrupted.steps[3:]]
    assert len({m.epoch for m in second.steps}) >= 2  # epoch boundaries inside the resumed part
    combined = first.losses + second.losses
    assert combined == pytest.approx(uninterrupted.losses, abs=1e-6, rel=0)
    assert [m.lr for m in second.steps] == pytest.approx([m.lr for m in uninterrupted.steps[3:]])
    rows = read_metrics(tmp_path / "b" / "metrics.csv")
    assert [r["loss"] for r in rows] == pytest.approx(uninterrupted.losses, abs=1e-6, rel=0)


def test_periodic_checkpoints_and_explicit_resume_from(base_model, tmp_path):
    recorder = Recorder()
    config = make_config(
        base_model, tmp_path / "run", max_steps=6, checkpoint_every_steps=2, keep_checkpoints=2
    )
    train(config, repetitive_data(), [recorder])
    assert [step for step, _ in recorder.checkpoints] == [2, 4]  # the last step saves the artifact
    assert latest_checkpoint(config.checkpoints_dir).name == "step-000004"
    assert sorted(p.name for p in config.checkpoints_dir.iterdir()) == [
        "latest",
        "step-000002",
        "step-000004",
    ]

    # resume_from an older checkpoint into a fresh output dir continues from there
    again = Recorder()
    config2 = make_config(
        base_model,
        tmp_path / "other",
        max_steps=6,
        resume_from=str(config.checkpoints_dir / "step-000002"),
    )
    train(config2, repetitive_data(), [again])
    assert [m.step for m in again.steps] == [3, 4, 5, 6]
    assert again.losses == pytest.approx(recorder.losses[2:], abs=1e-6, rel=0)


def test_stop_when_predicate(base_model, tmp_path):
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) >= 2

    result = train(
        make_config(base_model, tmp_path / "run"), repetitive_data(), [StopWhen(cancelled)]
    )
    assert result.status == "stopped" and result.steps == 2 and result.stop_reason == "cancelled"
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    assert summary["status"] == "stopped" and summary["steps"] == 2


# --------------------------------------------------------------------------- artifacts


def test_output_config_carries_rope_scaling_and_reload_honours_it(base_model, tmp_path):
    config = make_config(
        base_model, tmp_path / "run", method="full", max_steps=2, rope_method="linear"
    )
    result = train(config, repetitive_data())

    saved = json.loads((result.artifact_dir / "config.json").read_text())
    assert saved["rope_parameters"]["rope_type"] == "linear"
    assert saved["rope_parameters"]["factor"] == 2.0
    assert saved["max_position_embeddings"] == 2 * ORIGINAL_CONTEXT
    assert saved["longtune_context"]["rope_method"] == "linear"
    assert saved["longtune_context"]["original_length"] == ORIGINAL_CONTEXT

    model, _ = load_trained_model(result.artifact_dir)
    assert model.config.rope_parameters["rope_type"] == "linear"
    # Linear PI divides every RoPE frequency by the factor: the loaded rotary embedding did.
    from transformers import AutoConfig, AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base_model))
    assert torch.allclose(model.model.rotary_emb.inv_freq, plain.model.rotary_emb.inv_freq / 2.0)

    summary = json.loads((result.artifact_dir / "training_summary.json").read_text())
    assert summary["steps"] == 2 and summary["config"]["rope_method"] == "linear"
    assert 0 < summary["packing"]["efficiency"] <= 1
    assert summary["tokens_seen"] == 2 * config.tokens_per_micro_batch
    assert summary["context"]["rope_factor"] == 2.0


def test_lora_artifact_loads_and_generates_what_it_learned(base_model, tmp_path):
    config = make_config(
        base_model,
        tmp_path / "run",
        max_steps=30,
        learning_rate=5e-3,
        lora_r=8,
        lora_train_embeddings_and_norms=True,
    )
    result = train(config, [{"text": SENTENCE}] * 24)
    artifact = result.artifact_dir
    assert (artifact / "adapter_model.safetensors").is_file()
    assert (artifact / "metrics.csv").is_file() and (artifact / "training_summary.json").is_file()
    from safetensors.torch import load_file

    saved = load_file(str(artifact / "adapter_model.safetensors"))
    assert any("lora_A" in k for k in saved)
    assert any("embed_tokens" in k for k in saved) and any("norm" in k for k in saved)  # LoRA+

    model, tokenizer = load_trained_model(artifact)
    # The default scaling, read back from the saved config (not re-derived at load time).
    assert model.config.longtune_context["rope_method"] == DEFAULT_ROPE_METHOD
    assert model.config.rope_parameters == rope_parameters_for(
        DEFAULT_ROPE_METHOD, 2.0, ORIGINAL_CONTEXT, 10000.0, head_dim(model.config)
    )
    assert model.config.max_position_embeddings == 2 * ORIGINAL_CONTEXT
    model.eval()
    prompt = tokenizer("The quick river", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(out[0], skip_special_tokens=True)
    assert text.startswith("The quick river runs to the city"), text


def test_cli_rejects_a_bad_config_naming_the_field(tmp_path, capsys):
    from gpu_runtime.__main__ import main

    path = tmp_path / "cfg.json"
    path.write_text(
        json.dumps({"base_model": "m", "output_dir": "o", "context_length": 64, "method": "qlora"})
    )
    assert main(["train", "--config", str(path), "--data", str(tmp_path / "d.jsonl")]) == 2
    assert "method:" in capsys.readouterr().err


def test_trained_tokens_count_real_tokens_not_padding(base_model, tmp_path):
    """What a job is billed for: every epoch's non-padding tokens, exactly once per epoch."""
    from gpu_runtime.data import pack_dataset
    from gpu_runtime.registry import load_tokenizer

    data = repetitive_data(7)  # short documents: rows end in padding
    config = make_config(base_model, tmp_path / "run", max_steps=None, num_epochs=2)
    recorder = Recorder()
    result = train(config, data, [recorder])

    rows, _ = pack_dataset(data, load_tokenizer(base_model), config.context_length)
    real = sum(r.num_real_tokens for r in rows)
    assert 0 < real < len(rows) * config.context_length  # there is padding to leave out
    assert result.steps == 2 * len(rows)
    assert result.trained_tokens == 2 * real
    assert result.tokens_seen == 2 * len(rows) * config.context_length
    cumulative = [m.trained_tokens for m in recorder.steps]
    assert cumulative == sorted(cumulative) and cumulative[-1] == result.trained_tokens
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    assert summary["trained_tokens"] == result.trained_tokens
