"""Request bodies (validated with DRF, so a bad field answers 400 naming its path) and the
OpenAI-shaped response objects (plain functions: explicit, and fast on list endpoints)."""

from __future__ import annotations

import math
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from longtune.api.fields import unix
from longtune.billing.prices import training_cost_estimate
from longtune.catalog.services import checkpoint_model_name
from longtune.evaluation.serializers import FineTuneEvaluationSerializer
from longtune.finetuning.auto import AUTO
from longtune.finetuning.models import FineTuningJob, JobCheckpoint, JobEvent

MIN_CONTEXT_LENGTH = 32
HARD_MAX_CONTEXT_LENGTH = 1_048_576  # 1M tokens (sequence parallelism); a model's own max is lower
MAX_SEED = 2**31 - 1


class AutoOr(serializers.Field):
    """``"auto"`` or a value the child field accepts (OpenAI's hyperparameter spelling)."""

    def __init__(self, child: serializers.Field, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.child = child

    def bind(self, field_name: str, parent: Any) -> None:
        super().bind(field_name, parent)
        self.child.bind(field_name, self)

    def to_internal_value(self, data: Any) -> Any:
        if data == AUTO:
            return AUTO
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise serializers.ValidationError('Must be "auto" or a number.', code="invalid_type")
        if isinstance(data, float) and not math.isfinite(data):
            raise serializers.ValidationError("Must be a finite number.", code="invalid")
        return self.child.run_validation(data)

    def to_representation(self, value: Any) -> Any:
        return value


class AutoOrInteger(AutoOr):
    pass


class AutoOrNumber(AutoOr):
    pass


class AutoOrSchema(OpenApiSerializerFieldExtension):
    """``"auto"`` or the child's own schema, bounds included (n_epochs 1..50, ...)."""

    target_class = AutoOr
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        child = auto_schema._map_serializer_field(self.target.child, direction)
        auto_schema._insert_field_validators(self.target.child, child)
        return {"oneOf": [{"type": "string", "enum": [AUTO]}, child]}


class HyperparametersSerializer(serializers.Serializer):
    n_epochs = AutoOrInteger(serializers.IntegerField(min_value=1, max_value=50), required=False)
    batch_size = AutoOrInteger(serializers.IntegerField(min_value=1, max_value=256), required=False)
    learning_rate_multiplier = AutoOrNumber(
        serializers.FloatField(min_value=1e-6, max_value=10.0), required=False
    )
    # LongTune extension: packed row length (<= context_length). "auto" packs short examples
    # into short rows so a small dataset still gets enough optimizer steps (finetuning.auto).
    sequence_length = AutoOrInteger(
        serializers.IntegerField(min_value=MIN_CONTEXT_LENGTH, max_value=HARD_MAX_CONTEXT_LENGTH),
        required=False,
    )


class SupervisedSerializer(serializers.Serializer):
    hyperparameters = HyperparametersSerializer(required=False)


class MethodSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["supervised"])
    supervised = SupervisedSerializer(required=False)


class RopeScalingSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=[], required=False)  # gpu_runtime's: see __init__
    factor = serializers.FloatField(min_value=1.0, max_value=1024.0, required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Imported here, not at module level: the web tier reaches gpu_runtime only through
        # its torch-free contract, and only when a request needs it ("none" = no extension).
        from gpu_runtime.contract import JOB_ROPE_METHODS

        super().__init__(*args, **kwargs)
        self.fields["type"].choices = list(JOB_ROPE_METHODS)

    def to_internal_value(self, data: Any) -> Any:
        # A method gpu_runtime knows but a job may not train with gets its own code and the
        # reason, rather than DRF's bare "not a valid choice".
        from gpu_runtime.contract import (
            LENGTH_DEPENDENT_ROPE_METHODS,
            ROPE_METHOD_NOT_SERVABLE,
            not_servable_reason,
        )

        if isinstance(data, dict) and data.get("type") in LENGTH_DEPENDENT_ROPE_METHODS:
            message = f"{not_servable_reason(data['type'])}. Use 'yarn' (the default) or 'ntk'."
            raise serializers.ValidationError(
                {"type": [ErrorDetail(message, code=ROPE_METHOD_NOT_SERVABLE)]}
            )
        return super().to_internal_value(data)


class LoraSerializer(serializers.Serializer):
    r = serializers.IntegerField(min_value=1, max_value=1024, required=False)
    alpha = serializers.FloatField(min_value=1e-3, max_value=16384.0, required=False)
    dropout = serializers.FloatField(min_value=0.0, max_value=0.99, required=False)
    target_modules = serializers.ListField(
        child=serializers.RegexField(r"^[A-Za-z0-9_.-]{1,100}$"),
        min_length=1,
        max_length=64,
        required=False,
    )


class RecipeSourceSerializer(serializers.Serializer):
    file = serializers.CharField(max_length=64)
    weight = serializers.FloatField(min_value=1e-6, max_value=1e6)


class RecipeSerializer(serializers.Serializer):
    """Mix other processed files into the training data (datasets.recipes): the training
    file is one source with ``training_file_weight``."""

    sources = RecipeSourceSerializer(many=True, min_length=1, max_length=16)
    training_file_weight = serializers.FloatField(min_value=0.0, max_value=1e6, default=1.0)
    min_tokens = serializers.IntegerField(min_value=0, max_value=HARD_MAX_CONTEXT_LENGTH, default=0)
    deduplicate = serializers.BooleanField(default=True)


class JobCreateSerializer(serializers.Serializer):
    model = serializers.CharField(
        max_length=300,
        help_text="A base model, or one of the organization's fine-tuned models or per-epoch "
        "checkpoints (`ft:...`, `ft:...:ckpt-step-<n>`) to continue training from: same base, "
        "its weights as the start, its method, LoRA shape and RoPE scaling inherited.",
    )
    training_file = serializers.CharField(max_length=64)
    validation_file = serializers.CharField(max_length=64, required=False, allow_null=True)
    hyperparameters = HyperparametersSerializer(required=False)  # legacy top-level spelling
    method = MethodSerializer(required=False)
    suffix = serializers.RegexField(
        r"^[A-Za-z0-9_-]{0,40}$", required=False, allow_null=True, allow_blank=True
    )
    seed = serializers.IntegerField(
        min_value=0, max_value=MAX_SEED, required=False, allow_null=True
    )
    # LongTune extensions
    context_length = serializers.IntegerField(
        min_value=MIN_CONTEXT_LENGTH, max_value=HARD_MAX_CONTEXT_LENGTH, required=False
    )
    rope_scaling = RopeScalingSerializer(required=False)
    lora = LoraSerializer(required=False)
    full = serializers.BooleanField(required=False, default=False)
    recipe = RecipeSerializer(required=False, allow_null=True)
    train_on_inputs = serializers.BooleanField(required=False, default=False)
    evaluation = FineTuneEvaluationSerializer(
        required=False,
        allow_null=True,
        help_text="Evaluate the fine-tuned model when the job succeeds (an evaluation job, "
        "linked from the job's events and its `evaluation.id`).",
    )

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {unknown[0][:100]: ["Unrecognized request argument."]}, code="unknown_parameter"
                )
        return super().to_internal_value(data)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("full") and "lora" in attrs:
            raise serializers.ValidationError(
                {"full": ["Give either `lora` settings or `full: true`, not both."]},
                code="conflicting_parameters",
            )
        return attrs


# --------------------------------------------------------------------------- responses


def hyperparameters_payload(job: FineTuningJob) -> dict[str, Any]:
    hp = job.hyperparameters
    return {
        "n_epochs": hp.get("n_epochs"),
        "batch_size": hp.get("batch_size"),
        "learning_rate_multiplier": hp.get("learning_rate_multiplier"),
        # None: a job created before rows could be shorter than the context (rows = context)
        "sequence_length": hp.get("sequence_length"),
    }


def job_payload(job: FineTuningJob) -> dict[str, Any]:
    """The OpenAI ``fine_tuning.job`` object plus LongTune's extensions."""
    hyperparameters = hyperparameters_payload(job)
    return {
        "object": "fine_tuning.job",
        "id": job.public_id,
        "created_at": unix(job.created_at),
        "finished_at": unix(job.finished_at),
        "model": job.model_name,  # as given: a base model or the fine-tuned model continued
        "fine_tuned_model": job.fine_tuned_model,
        "organization_id": job.org.public_id,
        "status": job.status,
        "training_file": job.training_file_ref,
        "validation_file": job.validation_file_ref or None,
        "result_files": [job.metrics_file.public_id] if job.metrics_file_id else [],
        "hyperparameters": hyperparameters,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        "trained_tokens": job.trained_tokens,
        "error": job.error,
        "seed": job.seed,
        "suffix": job.suffix or None,
        "user_provided_suffix": job.suffix or None,
        "estimated_finish": _estimated_finish(job),
        "integrations": [],
        "metadata": None,
        # LongTune extensions
        # The fine-tuned model (final or checkpoint) the job starts from, and its base
        "parent_model": job.parent_model.name if job.parent_model_id else None,
        "base_model": job.base_model.name,
        "context_length": job.context_length,
        "rope_scaling": {"type": job.rope_method, "factor": job.rope_factor},
        # gpu_runtime.memory_planner.MemoryPlan.to_dict(): accelerator, layout, predicted peak
        # per rank by component; null when the base model has no recorded architecture.
        "memory_plan": job.memory_plan,
        "lora": job.lora if job.method == "lora" else None,
        "full": job.method == "full",
        "recipe": job.recipe,
        "train_on_inputs": job.train_on_inputs,
        "evaluation": job.evaluation,
        "estimated_tokens": job.estimated_tokens,
        # USD at the org's plan's training price (billing.prices), like Together's estimate.
        "estimated_cost": training_cost_estimate(job.org.plan, job.estimated_tokens),
        "progress": progress_payload(job),
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
    }


def progress_payload(job: FineTuningJob) -> dict[str, Any]:
    progress = job.progress or {}
    return {
        "step": progress.get("step", 0),
        "total_steps": progress.get("total_steps"),
        "loss": progress.get("loss"),
        "tokens_per_second": progress.get("tokens_per_second"),
        "eta_seconds": progress.get("eta_seconds"),
    }


def _estimated_finish(job: FineTuningJob) -> int | None:
    eta = (job.progress or {}).get("eta_seconds")
    updated = (job.progress or {}).get("updated_at")
    if job.is_terminal or eta is None or updated is None:
        return None
    return int(updated + eta)


def event_payload(event: JobEvent) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.event",
        "id": event.public_id,
        "created_at": unix(event.created_at),
        "level": event.level,
        "type": event.type,
        "message": event.message,
        "data": event.data,
    }


def checkpoint_payload(checkpoint: JobCheckpoint, job: FineTuningJob) -> dict[str, Any]:
    """OpenAI's checkpoint object. An epoch's checkpoint has a model of its own (deployable and
    usable as a job's ``model`` by this name); a mid-epoch one is resume state only."""
    model = checkpoint.fine_tuned_model
    live = model is not None and model.deleted_at is None
    return {
        "object": "fine_tuning.job.checkpoint",
        "id": checkpoint.public_id,
        "created_at": unix(checkpoint.created_at),
        "fine_tuned_model_checkpoint": model.name
        if model is not None
        else checkpoint_model_name(job, checkpoint.step),
        "fine_tuning_job_id": job.public_id,
        "step_number": checkpoint.step,
        "metrics": {"step": checkpoint.step, **checkpoint.metrics},
        # LongTune extension: whether POST /v1/endpoints (or a job's model) accepts the name
        "deployable": live,
    }
