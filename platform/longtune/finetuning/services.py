"""Creating and cancelling fine-tuning jobs (what the API views call).

Creation is two phases: ``plan_job`` resolves and validates the request against the database
(no locks: model, files, hyperparameters, context, memory plan) and ``create_job`` then checks the quotas
and inserts the job in ONE transaction holding the org row lock (tenancy.quotas), so 100
simultaneous submissions against a limit of N admit exactly N.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from longtune.api.errors import ApiError
from longtune.billing.guard import ensure_billable
from longtune.catalog.models import BaseModel, FineTunedModel
from longtune.catalog.resolution import resolve_model
from longtune.compute.queues import training_queue_for
from longtune.datasets.models import File, FilePurpose, FileStatus
from longtune.evaluation import services as evaluation_services
from longtune.events import EventLevel
from longtune.finetuning import auto
from longtune.finetuning.auto import AUTO, DatasetShape
from longtune.finetuning.dispatch import dispatch_new_job
from longtune.finetuning.events import record_event
from longtune.finetuning.models import FineTuningJob, JobStatus
from longtune.finetuning.planning import (
    MemoryPlanning,
    plan_context,
    plan_memory,
    train_config_for,
)
from longtune.finetuning.quotas import (
    active_job_count,
    storage_bytes_used,
    training_tokens_this_month,
)
from longtune.finetuning.serializers import MAX_SEED, JobCreateSerializer
from longtune.tenancy.models import ApiKey, Organization
from longtune.tenancy.quotas import reserve_quota

if TYPE_CHECKING:
    from gpu_runtime.contract import ContextSpec

DEFAULT_LORA = {"r": 16, "alpha": 32.0, "dropout": 0.05}  # + target_modules: _default_lora()


def _default_lora() -> dict[str, Any]:
    """LoRA defaults; target modules = gpu_runtime's "all linear layers" marker (imported
    lazily: the web tier touches gpu_runtime only through its torch-free contract)."""
    from gpu_runtime.contract import ALL_LINEAR

    return {**DEFAULT_LORA, "target_modules": [ALL_LINEAR]}


IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_LENGTH = 255


@dataclass
class CreateOutcome:
    job: FineTuningJob
    created: bool  # False: an Idempotency-Key replay returned the existing job


# --------------------------------------------------------------------------- planning


def _file_for(org: Organization, file_id: str, param: str) -> File:
    """A processed fine-tune file of this org; another org's id is simply not found."""
    file = File.objects.for_org(org).filter(public_id=file_id).first()
    if file is None:
        raise ApiError(
            status=404,
            code="file_not_found",
            message=f"No file with id {file_id[:64]!r} in this organization.",
            param=param,
        )
    if file.purpose != FilePurpose.FINE_TUNE:
        raise ApiError(
            status=400,
            code="invalid_file_purpose",
            message=f"File {file.public_id} has purpose {file.purpose!r}; expected 'fine-tune'.",
            param=param,
        )
    if file.status != FileStatus.PROCESSED:
        detail = (
            "failed validation" if file.status == FileStatus.ERROR else "is still being processed"
        )
        raise ApiError(
            status=400,
            code="file_not_ready",
            message=f"File {file.public_id} {detail} (status {file.status!r}); "
            "wait until it is 'processed'.",
            param=param,
        )
    return file


PARENT_MODEL_CONFLICT = "parent_model_conflict"
# The LoRA settings that make an adapter's shape and scale: a job from a LoRA fine-tune keeps
# them (it trains the same adapter on); dropout is a training-time choice and may change.
LORA_SHAPE = ("r", "alpha", "target_modules")


@dataclass(frozen=True)
class StartingModel:
    """What ``model`` names: the base model trained on, and the org's fine-tuned model (final
    or per-epoch checkpoint) whose weights the job starts from, if any."""

    base: BaseModel
    parent: FineTunedModel | None


def _starting_model_for(org: Organization, name: str) -> StartingModel:
    """The base model or the org's own live fine-tuned model called ``name``: another org's
    model, a deleted one and a missing one are the same 404 ``model_not_found``
    (``catalog.resolution.resolve_model``)."""
    resolved = resolve_model(org, name)
    return StartingModel(resolved.base, resolved.fine_tuned)


def _conflict(param: str, message: str) -> ApiError:
    return ApiError(status=400, code=PARENT_MODEL_CONFLICT, message=message, param=param)


def _parent_lora(parent: FineTunedModel) -> dict[str, Any]:
    """The LoRA settings the parent's adapter was trained with (its job's; a checkpoint's is
    the job it is a checkpoint of)."""
    job = parent.job or parent.checkpoint_of
    if job is None or not job.lora:
        raise _conflict(
            "model",
            f"The model {parent.name!r} no longer records the LoRA settings it was trained "
            "with, so a job cannot continue its adapter; start from its base model.",
        )
    return dict(job.lora)


def _same_lora_setting(key: str, given: Any, inherited: Any) -> bool:
    if key == "target_modules":
        return sorted(given) == sorted(inherited)
    return float(given) == float(inherited)


def _method_and_lora(
    data: dict[str, Any], parent: FineTunedModel | None
) -> tuple[str, dict[str, Any] | None]:
    """The job's method and LoRA settings. From a base model: as requested. From a fine-tuned
    model: its method, and for LoRA its adapter's shape (rank, alpha, targets), because the job
    keeps training THAT adapter; a request asking otherwise is a 400 naming the field."""
    full = bool(data.get("full"))
    given_lora = data.get("lora") or {}
    if parent is None:
        return ("full", None) if full else ("lora", {**_default_lora(), **given_lora})
    if parent.method == "full":
        if "lora" in data:
            raise _conflict(
                "lora",
                f"{parent.name!r} is a full fine-tune: a job from it trains its full weights "
                "further, so `lora` settings do not apply.",
            )
        return "full", None
    if full:
        raise _conflict(
            "full",
            f"{parent.name!r} is a LoRA fine-tune: a job from it keeps training its adapter. "
            "For a full fine-tune, start from its base model.",
        )
    inherited = _parent_lora(parent)
    for key in LORA_SHAPE:
        if key in given_lora and not _same_lora_setting(key, given_lora[key], inherited[key]):
            raise _conflict(
                f"lora.{key}",
                f"lora.{key} {given_lora[key]!r} differs from the {inherited[key]!r} that "
                f"{parent.name!r}'s adapter was trained with; a job from it keeps that "
                f"adapter's {key} (leave lora.{key} out).",
            )
    return "lora", {**inherited, **{k: v for k, v in given_lora.items() if k not in LORA_SHAPE}}


def _parent_context(parent: FineTunedModel | None) -> ContextSpec | None:
    if parent is None or not parent.context:
        return None
    from gpu_runtime.contract import ContextSpec

    return ContextSpec.from_dict(parent.context)


def _given_hyperparameters(data: dict[str, Any]) -> dict[str, Any]:
    legacy = data.get("hyperparameters")
    method = data.get("method") or {}
    nested = (method.get("supervised") or {}).get("hyperparameters")
    if legacy is not None and nested is not None:
        raise ApiError(
            status=400,
            code="conflicting_parameters",
            message="Give hyperparameters either in method.supervised.hyperparameters or "
            "at the top level (legacy), not both.",
            param="hyperparameters",
        )
    return dict(nested if nested is not None else (legacy or {}))


def dataset_shape(files: list[File], context_length: int) -> DatasetShape:
    """The training data's shape from the validator's counts. A file without them (counted
    before token stats existed) reads as full-context documents, so "auto" keeps rows of the
    whole context for it (a too-short row would cut its examples)."""
    examples = tokens = longest = 0
    for file in files:
        file_tokens = _file_tokens(file)
        stats = (file.report or {}).get("token_stats") or {}
        known = file.num_examples is not None and stats.get("max_tokens") is not None
        examples += file.num_examples if known else max(1, file_tokens // context_length)
        tokens += file_tokens
        longest = max(longest, int(stats["max_tokens"]) if known else context_length)
    return DatasetShape(examples=examples, tokens=tokens, max_example_tokens=longest)


def _hyperparameters(
    data: dict[str, Any], files: list[File], context_length: int, method: str
) -> dict[str, Any]:
    """Every "auto" resolved by ``finetuning.auto.choose`` from the data's shape (see there
    for why the packed row length and the step count matter)."""
    given = _given_hyperparameters(data)
    sequence_length = given.get("sequence_length", AUTO)
    if sequence_length != AUTO and sequence_length > context_length:
        raise ApiError(
            status=400,
            code="sequence_length_too_large",
            message=f"hyperparameters.sequence_length {sequence_length} exceeds the job's "
            f"context_length {context_length}; packed rows are at most one context long.",
            param="hyperparameters.sequence_length",
        )
    choice = auto.choose(
        dataset_shape(files, context_length),
        context_length=context_length,
        method=method,
        n_epochs=given.get("n_epochs", AUTO),
        batch_size=given.get("batch_size", AUTO),
        learning_rate_multiplier=given.get("learning_rate_multiplier", AUTO),
        sequence_length=sequence_length,
    )
    return {
        "n_epochs": choice.n_epochs,
        "batch_size": choice.batch_size,
        "learning_rate_multiplier": choice.learning_rate_multiplier,
        "sequence_length": choice.sequence_length,
    }


def _recipe(org: Organization, recipe: dict[str, Any] | None) -> tuple[dict | None, list[File]]:
    if not recipe:
        return None, []
    files = [
        _file_for(org, source["file"], f"recipe.sources.{index}.file")
        for index, source in enumerate(recipe["sources"])
    ]
    stored = {
        "sources": [
            {"file": file.public_id, "weight": source["weight"]}
            for file, source in zip(files, recipe["sources"], strict=True)
        ],
        "training_file_weight": recipe["training_file_weight"],
        "min_tokens": recipe["min_tokens"],
        "deduplicate": recipe["deduplicate"],
    }
    return stored, files


def _file_tokens(file: File) -> int:
    return int(
        file.num_tokens if file.num_tokens is not None else (file.scrubbed_bytes or file.bytes) // 4
    )


def _evaluation_option(option: dict[str, Any] | None, context_length: int) -> dict | None:
    """The job's ``evaluation`` option, checked now against the context it will be trained at
    (the same rules as POST /v1/evaluations): lengths default to [context_length]."""
    if not option:
        return None
    spec = {**option, "lengths": option.get("lengths") or [context_length]}
    lengths, depths, tasks, samples = evaluation_services.planned_grid(
        spec,
        limit=context_length,
        model_name="the fine-tuned model",
        param_prefix="evaluation.",
    )
    return {
        "suite": spec["suite"],
        "lengths": lengths,
        "depths": depths,
        "tasks": tasks,
        "samples": samples,
        "seed": spec.get("seed", 0),
        "id": None,
    }


def plan_job(org: Organization, data: dict[str, Any]) -> tuple[FineTuningJob, MemoryPlanning]:
    """An unsaved job with every "auto" resolved and its memory plan (``job.memory_plan``;
    the planning outcome comes along for the creation event); raises coded ApiErrors (4xx),
    ``insufficient_accelerator_memory`` among them."""
    starting = _starting_model_for(org, data["model"])
    base_model, parent = starting.base, starting.parent
    training_file = _file_for(org, data["training_file"], "training_file")
    validation_file = (
        _file_for(org, data["validation_file"], "validation_file")
        if data.get("validation_file")
        else None
    )
    method, lora = _method_and_lora(data, parent)
    context = plan_context(data, base_model, parent=_parent_context(parent))
    recipe, recipe_files = _recipe(org, data.get("recipe"))
    hyperparameters = _hyperparameters(
        data, [training_file, *recipe_files], context.target_length, method
    )
    seed = data.get("seed")
    evaluation = _evaluation_option(data.get("evaluation"), context.target_length)
    tokens_per_epoch = _file_tokens(training_file) + sum(_file_tokens(f) for f in recipe_files)
    job = FineTuningJob(
        org=org,
        base_model=base_model,
        parent_model=parent,
        model_name=data["model"],
        training_file=training_file,
        training_file_ref=training_file.public_id,
        validation_file=validation_file,
        validation_file_ref=validation_file.public_id if validation_file else "",
        method=method,
        hyperparameters=hyperparameters,
        lora=lora,
        context=context.to_dict(),
        recipe=recipe,
        train_on_inputs=bool(data.get("train_on_inputs")),
        evaluation=evaluation,
        suffix=data.get("suffix") or "",
        seed=seed if seed is not None else secrets.randbelow(MAX_SEED),
        estimated_tokens=tokens_per_epoch * hyperparameters["n_epochs"],
        queue=training_queue_for(org),
    )
    _check_train_config(job, parent)
    memory = plan_memory(job)  # 400 insufficient_accelerator_memory when nothing fits
    job.memory_plan = memory.plan
    if memory.plan is not None:
        _check_train_config(job, parent)  # again with the plan's layout (sequence splits)
    return job, memory


def _check_train_config(job: FineTuningJob, parent: FineTunedModel | None) -> None:
    """The exact dataclass the worker trains with must build: no surprise there."""
    try:
        train_config_for(
            job,
            output_dir="validate-only",
            checkpoint_every_steps=1,
            parent_model="validate-only" if parent is not None else None,
        )
    except ValueError as exc:
        raise ApiError(
            status=400, code="invalid_hyperparameters", message=str(exc), param=None
        ) from exc


def _memory_sentence(memory: MemoryPlanning) -> str:
    """The creation event's account of the memory plan (its data carries the whole plan)."""
    if memory.plan is None:
        return f"Memory not planned: {memory.reason}."
    source = memory.capacity.source if memory.capacity else "the shared pool"
    return f"Memory plan on {source}: {memory.plan['summary']}."


def job_starting_from(model: FineTunedModel) -> str | None:
    """The catalog's in-use check (registered in ``FinetuningConfig.ready``): a model an active
    job starts from keeps its artifact until that job has downloaded and trained from it (a
    job's checkpoint kept this way outlives the newest-three pruning until then)."""
    job = FineTuningJob.objects.for_org(model.org).active().filter(parent_model=model).first()
    if job is None:
        return None
    return f"fine-tuning job {job.public_id} ({job.status}) starts from it; wait for it to finish."


# --------------------------------------------------------------------------- creation


def request_fingerprint(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_idempotency_key(key: str | None) -> str:
    if key is None:
        return ""
    if not (0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH and key.isascii() and key.isprintable()):
        raise ApiError(
            status=400,
            code="invalid_idempotency_key",
            message=f"{IDEMPOTENCY_KEY_HEADER} must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} "
            "printable ASCII characters.",
            param=IDEMPOTENCY_KEY_HEADER,
        )
    return key


def _replay(org: Organization, key: str, fingerprint: str) -> FineTuningJob | None:
    existing = FineTuningJob.objects.for_org(org).filter(idempotency_key=key).first()
    if existing is not None and existing.request_fingerprint != fingerprint:
        raise ApiError(
            status=409,
            code="idempotency_conflict",
            message=f"{IDEMPOTENCY_KEY_HEADER} {key[:64]!r} was already used with a different "
            "request body.",
            param=IDEMPOTENCY_KEY_HEADER,
        )
    return existing


def create_job(
    *, org: Organization, body: Any, api_key: ApiKey | None, idempotency_key: str | None
) -> CreateOutcome:
    key = check_idempotency_key(idempotency_key)
    serializer = JobCreateSerializer(data=body)
    serializer.is_valid(raise_exception=True)
    fingerprint = request_fingerprint(body)
    if key and (existing := _replay(org, key, fingerprint)) is not None:
        return CreateOutcome(existing, created=False)  # fast path, no lock
    job, memory = plan_job(org, serializer.validated_data)
    job.created_by_key = api_key
    job.idempotency_key = key
    job.request_fingerprint = fingerprint
    with reserve_quota(org) as reservation:
        if key and (existing := _replay(org, key, fingerprint)) is not None:
            return CreateOutcome(existing, created=False)  # a concurrent twin won the race
        ensure_billable(reservation.org)  # 402 billing_suspended / budget_exceeded
        reservation.check("max_concurrent_jobs", used=active_job_count(org), requested=1)
        reservation.check(
            "monthly_training_tokens",
            used=training_tokens_this_month(org),
            requested=job.estimated_tokens,
        )
        reservation.check("storage_bytes", used=storage_bytes_used(org), requested=0)
        job.save()
        record_event(
            job,
            f"Created fine-tuning job {job.public_id}: {job.model_name} at context "
            f"{job.context_length} ({job.rope_method} ×{job.rope_factor:g}), {job.method}. "
            + _memory_sentence(memory),
            data={"memory_plan": memory.plan} if memory.plan else None,
        )
        transaction.on_commit(lambda: dispatch_new_job(job.pk))
    return CreateOutcome(job, created=True)


# --------------------------------------------------------------------------- cancellation


def cancel_job(job: FineTuningJob) -> FineTuningJob:
    """Not started yet: cancelled at once. Running: a flag the training loop polls at each
    step boundary (it then checkpoints and the worker marks the job cancelled)."""
    with transaction.atomic():
        job = FineTuningJob.objects.for_org(job.org).select_for_update().get(pk=job.pk)
        if job.is_terminal:
            raise ApiError(
                status=409,
                code="job_not_cancellable",
                message=f"Job {job.public_id} already {job.status}.",
                param=None,
            )
        if job.status == JobStatus.RUNNING:
            if not job.cancel_requested:
                job.cancel_requested = True
                job.save(update_fields=["cancel_requested"])
                record_event(job, "Cancellation requested; stopping at the next step boundary.")
        else:
            job.status = JobStatus.CANCELLED
            job.cancel_requested = True
            job.finished_at = timezone.now()
            job.trained_tokens = 0
            job.save(update_fields=["status", "cancel_requested", "finished_at", "trained_tokens"])
            record_event(job, "Job cancelled before training started.")
    return job


# --------------------------------------------------------------------------- on success


def evaluate_fine_tuned_model(job_pk: int) -> str | None:
    """A succeeded job with the ``evaluation`` option creates that evaluation of its model
    (once: the id is stored under the job's row lock). Returns the evaluation's id. Called by
    the training worker after the job is marked succeeded; a refusal is reported as a job
    event, never as a failure of the job (its model exists and is fine)."""
    with transaction.atomic():
        job = (
            FineTuningJob.objects.unscoped_across_orgs()
            .select_for_update()
            .select_related("org")
            .get(pk=job_pk)
        )
        option = job.evaluation
        if job.status != JobStatus.SUCCEEDED or not option or option.get("id"):
            return (option or {}).get("id")
        spec = {k: option[k] for k in ("suite", "lengths", "samples", "seed")}
        for name in ("depths", "tasks"):
            if option.get(name):
                spec[name] = option[name]
        try:
            evaluation = evaluation_services.create_evaluation(
                org=job.org,
                data={"model": job.fine_tuned_model, **spec},
                api_key=job.created_by_key,
            )
        except ApiError as exc:
            record_event(
                job,
                f"Evaluation of {job.fine_tuned_model} not created: {exc.message}",
                level=EventLevel.WARN,
                data={"code": exc.code},
            )
            return None
        job.evaluation = {**option, "id": evaluation.public_id}
        job.save(update_fields=["evaluation"])
        record_event(
            job,
            f"Evaluation {evaluation.public_id} created for {job.fine_tuned_model}: "
            f"{evaluation.suite} at {evaluation.lengths}.",
            data={"evaluation": evaluation.public_id},
        )
    return evaluation.public_id
