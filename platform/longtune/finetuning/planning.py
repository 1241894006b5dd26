"""Job planning: a request's context -> the job's ContextSpec, the job's memory plan, and a
job row -> TrainConfig.

They come from gpu_runtime.contract and gpu_runtime.memory_planner (both torch-free, and the
only gpu_runtime modules the web tier may import), so the web tier plans and validates a job
with the exact objects the worker will train with. Imported inside the functions, never at
module level: loading the web process must not reach into gpu_runtime at all.

The ContextSpec is planned HERE, once, when the job is created (``plan_context``); the job
stores it (``FineTuningJob.context``) and ``train_config_for`` hands it to TrainConfig
unchanged, so nothing downstream recomputes the RoPE factor.

The memory plan is made here too (``plan_memory``), against the capacity the job's queue
routes to (the shared pool's accelerator from settings, or the org's dedicated instance's):
a job whose predicted peak per rank fits no layout there is refused with
``insufficient_accelerator_memory`` (saying the best layout, its shortfall, the longest context
that would fit there and the smallest catalogue capacity that would fit); a job that fits
stores the chosen plan (``FineTuningJob.memory_plan``) and ``train_config_for`` applies its
layout: the data- and sequence-parallel degrees (the worker launches that many ranks under
torchrun when there is more than one), the sequence-parallel mode and the memory knobs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ObjectDoesNotExist

from longtune.api.errors import ApiError
from longtune.catalog.models import BaseModel
from longtune.compute.queues import TRAINING, dedicated_capacity_for
from longtune.finetuning.conf import finetune_conf
from longtune.finetuning.models import FineTuningJob
from longtune.tenancy.models import Organization

if TYPE_CHECKING:
    from gpu_runtime.contract import ContextSpec, TrainConfig
    from gpu_runtime.memory_planner import Accelerator, TrainingSetup

INSUFFICIENT_ACCELERATOR_MEMORY = "insufficient_accelerator_memory"

# AdamW base learning rates; OpenAI's learning_rate_multiplier scales them.
BASE_LEARNING_RATE = {"lora": 2e-4, "full": 2e-5}


def plan_context(
    data: dict[str, Any], model: BaseModel, parent: ContextSpec | None = None
) -> ContextSpec:
    """The job's ContextSpec from the request's ``context_length`` and/or ``rope_scaling``.

    ``context_length`` wins; ``rope_scaling.factor`` alone means original × factor; neither
    means the base's own context. A given factor must agree with the planned one (the factor
    is derived, so two disagreeing inputs are a client error, not a choice we make).

    ``parent``: the context spec of the fine-tuned model the job starts from. The job inherits
    it: neither given means the parent's target length; a scaled parent's RoPE method is kept
    (its weights learned positions under that method; another method is a 400 naming
    ``rope_scaling.type``), an unscaled one takes the request's method like a base model. A
    longer target is planned from the base's ORIGINAL context, never from the parent's target:
    a ContextSpec is always relative to the positions the base was pre-trained at (that is what
    ``gpu_runtime.rope.apply_context`` applies to the base's config), so ×2 on a ×4 parent is
    simply ×8 of the original -- factors never compound. A shorter target than the parent's
    would shrink the scaling its weights learned: refused (``context_length_too_small``);
    shorter training rows are ``hyperparameters.sequence_length``."""
    from gpu_runtime.contract import (
        DEFAULT_ROPE_METHOD,
        LENGTH_DEPENDENT_ROPE_METHODS,
        ROPE_METHOD_NOT_SERVABLE,
        ContextSpec,
        not_servable_reason,
    )

    rope = data.get("rope_scaling") or {}
    method = rope.get("type", DEFAULT_ROPE_METHOD)
    if parent is not None and parent.scaled:
        if "type" in rope and rope["type"] != parent.rope_method:
            raise ApiError(
                status=400,
                code="parent_model_conflict",
                message=f"rope_scaling.type {rope['type']!r} differs from the "
                f"{parent.rope_method!r} scaling the starting model was trained with (x"
                f"{parent.rope_factor:g}); a job from it keeps that method (leave the type out).",
                param="rope_scaling.type",
            )
        method = parent.rope_method
        if method in LENGTH_DEPENDENT_ROPE_METHODS:  # a model trained before jobs refused it
            raise ApiError(
                status=400,
                code=ROPE_METHOD_NOT_SERVABLE,
                message=f"{not_servable_reason(method)}; a job cannot continue it. Start from "
                "its base model with rope_scaling.type 'yarn' or 'ntk'.",
                param="model",
            )
    original = model.original_context_length
    given_factor = rope.get("factor")
    if "context_length" in data:
        context = data["context_length"]
    elif given_factor is not None:
        context = round(original * given_factor)
    else:
        context = parent.target_length if parent is not None else original
    if context > model.max_context_length:
        raise ApiError(
            status=400,
            code="context_length_too_large",
            message=f"context_length {context} exceeds {model.name}'s maximum of "
            f"{model.max_context_length}.",
            param="context_length",
        )
    if parent is not None and context < parent.target_length:
        raise ApiError(
            status=400,
            code="context_length_too_small",
            message=f"context_length {context} is shorter than the {parent.target_length} "
            "tokens the starting model was trained at; a job from it trains at that context "
            "or longer. For shorter training rows, set hyperparameters.sequence_length.",
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


@dataclass(frozen=True)
class TrainingCapacity:
    """The devices a job of this org will run on: what memory planning plans against."""

    accelerator: str  # a gpu_runtime.memory_planner catalogue name ("cpu", "h100_80gb", ...)
    devices: int
    source: str  # for messages: "the shared pool", "dedicated instance di-..."


def training_capacity_for(org: Organization, queue: str) -> TrainingCapacity:
    """The capacity behind ``queue`` (``compute.queues.training_queue_for(org)``).

    The org's dedicated training capacity when the job is routed there: its dedicated
    instance's accelerator type x accelerators per replica (one replica runs one job); a
    dedicated queue staff created without an instance is assumed to be shared-pool hardware.
    Otherwise the shared pool (``FINETUNE_SHARED_ACCELERATOR`` x ``..._PER_JOB``)."""
    conf = finetune_conf()
    shared = TrainingCapacity(
        conf.shared_accelerator, conf.shared_accelerators_per_job, "the shared pool"
    )
    capacity = dedicated_capacity_for(org, TRAINING)
    if capacity is None or capacity.queue != queue:
        return shared
    try:
        instance = capacity.instance
    except ObjectDoesNotExist:
        return TrainingCapacity(shared.accelerator, shared.devices, f"queue {capacity.queue}")
    return TrainingCapacity(
        instance.accelerator_type,
        instance.accelerators_per_replica,
        f"dedicated instance {instance.public_id}",
    )


def training_setup_for(job: FineTuningJob, accelerator: Accelerator) -> TrainingSetup:
    """What the job trains, as the memory planner sees it: one packed row of the target
    context per micro-batch (train_config_for), LoRA's rank/targets/dropout, and the compute
    dtype TrainConfig's ``dtype="auto"`` resolves to there (fp32 on CPU, bf16 on GPUs)."""
    from gpu_runtime.contract import ALL_LINEAR
    from gpu_runtime.memory_planner import CPU, TrainingSetup

    lora = job.lora or {}
    return TrainingSetup(
        context_length=job.context_length,
        micro_batch_size=1,
        method=job.method,
        lora_r=int(lora.get("r", 16)),
        lora_target_modules=tuple(lora.get("target_modules") or [ALL_LINEAR]),
        lora_dropout=float(lora.get("dropout", 0.0)),
        compute_dtype="float32" if accelerator.name == CPU else "bfloat16",
    )


def _engine_search_space():
    """The layouts LongTune's engine runs, with TrainConfig's own chunk sizes."""
    from gpu_runtime.contract import TrainConfig
    from gpu_runtime.memory_planner import SearchSpace

    fields = TrainConfig.__dataclass_fields__
    return SearchSpace(
        mlp_chunk_size=int(fields["mlp_chunk_size"].default),
        loss_chunk_size=int(fields["loss_chunk_size"].default),
    )


@dataclass(frozen=True)
class MemoryPlanning:
    """``plan`` (the stored dict) or, when the job cannot be planned, ``reason`` (why not)."""

    plan: dict[str, Any] | None
    reason: str = ""
    capacity: TrainingCapacity | None = None


def plan_memory(job: FineTuningJob) -> MemoryPlanning:
    """The job's memory plan on the capacity its queue routes to, or a coded 400.

    Not planned (``plan`` None, with the reason, never refused): a base model without a
    recorded architecture, or an accelerator type the planner's catalogue does not know."""
    from gpu_runtime import memory_planner as mp

    base = job.base_model
    if not base.architecture:
        return MemoryPlanning(None, f"base model {base.name} has no recorded architecture")
    capacity = training_capacity_for(job.org, job.queue)
    try:
        model = mp.ModelShape.from_dict(base.architecture)
        accelerator = mp.accelerator_named(capacity.accelerator, finetune_conf().cpu_memory_bytes)
    except ValueError as exc:
        return MemoryPlanning(None, str(exc), capacity)
    setup = training_setup_for(job, accelerator)
    search = _engine_search_space()
    result = mp.plan(model, setup, accelerator, capacity.devices, search)
    if result.fits:
        return MemoryPlanning(result.to_dict(), capacity=capacity)
    longest = mp.max_context_that_fits(model, setup, accelerator, capacity.devices, search)
    elsewhere = mp.smallest_fitting_capacity(model, setup, search)
    gib = mp.GIB
    message = (
        f"A {job.method} fine-tune of {base.name} at context_length {job.context_length} does "
        f"not fit {capacity.source} ({capacity.devices}x {accelerator.name}, "
        f"{accelerator.memory_bytes / gib:.0f} GiB each): the best layout there "
        f"({result.layout.describe()}) needs {result.estimate.peak_bytes / gib:.1f} GiB per "
        f"rank, {result.shortfall_bytes / gib:.1f} GiB more than the "
        f"{accelerator.usable_bytes / gib:.1f} GiB usable. "
        + (
            f"The longest context that fits there is {longest} tokens. "
            if longest
            else "Not even the weights and optimizer state fit there. "
        )
        + (
            f"It would fit {elsewhere.layout.world_size}x {elsewhere.accelerator} "
            f"({elsewhere.layout.describe()}): ask for dedicated capacity."
            if elsewhere
            else "No capacity in the catalogue fits it."
        )
    )
    raise ApiError(
        status=400, code=INSUFFICIENT_ACCELERATOR_MEMORY, message=message, param="context_length"
    )


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
    parent_model: str | None = None,
) -> TrainConfig:
    """The run a job describes. ``batch_size`` is packed sequences per optimizer step, spent
    as gradient accumulation over micro-batches of one sequence (long contexts fill memory);
    ``sequence_length`` is the packed row length "auto" chose (finetuning.auto; absent on jobs
    created before it existed: rows of the whole context).
    ``eval_every_steps`` only matters when the worker also passes validation data. The job's
    ContextSpec travels verbatim (``TrainConfig.context_fields``), and so does its memory
    plan's layout (``data_parallel`` x ``sequence_parallel`` ranks, the mode, the knobs)."""
    from gpu_runtime.contract import TrainConfig

    if (parent_model is None) != (job.parent_model_id is None):
        raise ValueError(
            "parent_model: give the parent's artifact directory exactly when the job starts "
            "from a fine-tuned model"
        )
    hp = job.hyperparameters
    lora = job.lora or {}
    extra: dict[str, Any] = {}
    if job.memory_plan:  # the planned layout: its parallel degrees and memory knobs
        layout = job.memory_plan["layout"]
        extra = {
            "activation_checkpointing": bool(layout["activation_checkpointing"]),
            "offload_activations": bool(layout["offload_activations"]),
            "mlp_chunk_size": int(layout["mlp_chunk_size"]),
            "loss_chunk_size": int(layout["loss_chunk_size"]),
            "data_parallel": int(layout.get("data_parallel", 1)),
            "sequence_parallel": int(layout.get("sequence_parallel", 1)),
        }
        if extra["sequence_parallel"] > 1:  # the mode the plan priced, verbatim
            extra["sequence_parallel_mode"] = str(layout["sequence_parallel_mode"])
    if job.method == "lora":
        extra |= {
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
        parent_model=parent_model,
        **extra,
    )
