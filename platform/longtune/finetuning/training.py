"""Job row -> gpu_runtime TrainConfig. Taken from gpu_runtime.contract (torch-free, and the only
gpu_runtime module the web tier may import), so the web tier validates a job with the exact
dataclass the worker will train with. Imported inside the function, never at module level:
loading the web process must not reach into gpu_runtime at all."""

from __future__ import annotations

from typing import TYPE_CHECKING

from longtune.finetuning.models import FineTuningJob

if TYPE_CHECKING:
    from gpu_runtime.contract import TrainConfig

# AdamW base learning rates; OpenAI's learning_rate_multiplier scales them.
BASE_LEARNING_RATE = {"lora": 2e-4, "full": 2e-5}


def train_config_for(
    job: FineTuningJob,
    *,
    output_dir: str,
    checkpoint_every_steps: int,
    keep_checkpoints: int = 2,
    eval_every_steps: int = 0,
) -> TrainConfig:
    """The run a job describes. ``batch_size`` is packed sequences per optimizer step, spent
    as gradient accumulation over micro-batches of one sequence (long contexts fill memory).
    ``eval_every_steps`` only matters when the worker also passes validation data."""
    from gpu_runtime.contract import TrainConfig

    hp = job.hyperparameters
    lora = job.lora or {}
    extra = {}
    if job.method == "lora":
        extra = {
            "lora_r": lora["r"],
            "lora_alpha": lora["alpha"],
            "lora_dropout": lora["dropout"],
            "lora_target_modules": list(lora["target_modules"]),
        }
    return TrainConfig(
        base_model=job.base_model.location,
        output_dir=output_dir,
        context_length=job.context_length,
        method=job.method,
        rope_method=job.rope_method,
        learning_rate=BASE_LEARNING_RATE[job.method] * float(hp["learning_rate_multiplier"]),
        num_epochs=int(hp["n_epochs"]),
        micro_batch_size=1,
        gradient_accumulation_steps=int(hp["batch_size"]),
        seed=int(job.seed),
        train_on_inputs=job.train_on_inputs,
        checkpoint_every_steps=checkpoint_every_steps,
        keep_checkpoints=keep_checkpoints,
        eval_every_steps=eval_every_steps,
        auto_resume=True,
        **extra,
    )
