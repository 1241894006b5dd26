"""Job planning: a request's context -> the job's ContextSpec, and a job row -> TrainConfig.

Both come from gpu_runtime.contract (torch-free, and the only gpu_runtime module the web tier
may import), so the web tier plans and validates a job with the exact objects the worker will
train with. Imported inside the functions, never at module level: loading the web process must
not reach into gpu_runtime at all.

The ContextSpec is planned HERE, once, when the job is created (``plan_context``); the job
stores it (``FineTuningJob.context``) and ``train_config_for`` hands it to TrainConfig
unchanged, so nothing downstream recomputes the RoPE factor.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from longtune.api.errors import ApiError
from longtune.catalog.models import BaseModel
from longtune.finetuning.models import FineTuningJob

if TYPE_CHECKING:
    from gpu_runtime.contract import ContextSpec, TrainConfig

# AdamW base learning rates; OpenAI's learning_rate_multiplier scales them.
BASE_LEARNING_RATE = {"lora": 2e-4, "full": 2e-5}


def plan_context(data: dict[str, Any], model: BaseModel) -> ContextSpec:
    """The job's ContextSpec from the request's ``context_length`` and/or ``rope_scaling``.

    ``context_length`` wins; ``rope_scaling.factor`` alone means original × factor; neither
    means the base's own context. A given factor must agree with the planned one (the factor
    is derived, so two disagreeing inputs are a client error, not a choice we make)."""
    from gpu_runtime.contract import DEFAULT_ROPE_METHOD, ContextSpec

    rope = data.get("rope_scaling") or {}
    method = rope.get("type", DEFAULT_ROPE_METHOD)
    original = model.original_context_length
    given_factor = rope.get("factor")
    if "context_length" in data:
        context = data["context_length"]
    elif given_factor is not None:
        context = round(original * given_factor)
    else:
        context = original
    if context > model.max_context_length:
        raise ApiError(
            status=400,
            code="context_length_too_large",
            message=f"context_length {context} exceeds {model.name}'s maximum of "
            f"{model.max_context_length}.",
            param="context_length",
        )
    spec = ContextSpec.plan(original_length=original, target_length=context, rope_method=method)
    factor = spec.rope_factor
    if given_factor is not None and not math.isclose(given_factor, factor, rel_tol=1e-3):
        raise ApiError(
            status=400,
            code="rope_factor_mismatch",
            message=f"rope_scaling.factor {given_factor} disagrees with context_length {context} / "
            f"{model.name}'s original context {original} = {factor:g}; give one of the two.",
            param="rope_scaling.factor",
        )
    return spec


def context_spec_of(job: FineTuningJob) -> ContextSpec:
    """The spec the job stored at planning (validated on the way out)."""
    from gpu_runtime.contract import ContextSpec

    return ContextSpec.from_dict(job.context)


def train_config_for(
    job: FineTuningJob,
    *,
    output_dir: str,
    checkpoint_every_steps: int,
    keep_checkpoints: int = 2,
    eval_every_steps: int = 0,
) -> TrainConfig:
    """The run a job describes. ``batch_size`` is packed sequences per optimizer step, spent
    as gradient accumulation over micro-batches of one sequence (long contexts fill memory);
    ``sequence_length`` is the packed row length "auto" chose (finetuning.auto; absent on jobs
    created before it existed: rows of the whole context).
    ``eval_every_steps`` only matters when the worker also passes validation data. The job's
    ContextSpec travels verbatim (``TrainConfig.context_fields``)."""
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
        **TrainConfig.context_fields(context_spec_of(job)),
        method=job.method,
        learning_rate=BASE_LEARNING_RATE[job.method] * float(hp["learning_rate_multiplier"]),
        num_epochs=int(hp["n_epochs"]),
        sequence_length=int(hp["sequence_length"]) if hp.get("sequence_length") else None,
        epoch_artifacts=int(hp["n_epochs"]) > 1,  # the deployable per-epoch checkpoints
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
