"""Creating, cancelling and finishing evaluation jobs: the rules both doors (API, dashboard)
and the worker share."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from longtune.api.errors import ApiError
from longtune.catalog.resolution import resolve_model
from longtune.compute.models import WorkStatus
from longtune.compute.queues import training_queue_for
from longtune.datasets.models import File, FilePurpose
from longtune.datasets.services import create_results_file
from longtune.evaluation.lifecycle import EVALUATIONS, record_event
from longtune.evaluation.models import TERMINAL_STATUSES, EvaluationJob, RulerTask, Suite
from longtune.tenancy.models import Organization

DEFAULT_DEPTHS = (0.1, 0.5, 0.9)
MAX_CELLS = 400  # lengths x depths x samples: each cell is one long prefill


def _context_limit(resolved) -> int:
    """The longest prompt the model may be evaluated at: a fine-tune's trained context, a
    base model's native one (evaluating a base past it needs RoPE scaling: a fine-tune)."""
    return resolved.context_length


def planned_grid(
    data: dict[str, Any], *, limit: int, model_name: str, param_prefix: str = ""
) -> tuple[list[int], list[float], list[str], int]:
    """(lengths, depths, tasks, samples) of a validated spec, or the coded 400 that refuses it: a
    length past ``limit`` (the model's context) or too many prompts. Shared by POST
    /v1/evaluations and a fine-tune job's ``evaluation`` option (checked at job creation, so
    a job never trains towards an evaluation that would be refused)."""
    from gpu_runtime.contract import CONTEXT_LENGTH_EXCEEDED  # torch-free; see tests/platform

    lengths = sorted(set(data["lengths"]))
    too_long = [n for n in lengths if n > limit]
    if too_long:
        raise ApiError(
            status=400,
            code=CONTEXT_LENGTH_EXCEEDED,
            message=f"lengths {too_long} exceed {model_name}'s context of {limit} tokens.",
            param=f"{param_prefix}lengths",
        )
    depths = list(data.get("depths") or DEFAULT_DEPTHS) if data["suite"] == Suite.PASSKEY else []
    tasks = list(data.get("tasks") or RulerTask.values) if data["suite"] == Suite.RULER else []
    samples = data.get("samples", 1)
    cells = len(lengths) * max(len(depths), 1) * max(len(tasks), 1) * samples
    if cells > MAX_CELLS:
        raise ApiError(
            status=400,
            code="evaluation_too_large",
            message=f"{cells} prompts requested; at most {MAX_CELLS} per evaluation.",
            param=f"{param_prefix}samples",
        )
    return lengths, depths, tasks, samples


def create_evaluation(
    *, org: Organization, data: dict[str, Any], api_key: Any = None
) -> EvaluationJob:
    """``data`` is validated by ``EvaluationCreateSerializer``; this adds the model rules."""
    resolved = resolve_model(org, data["model"])
    lengths, depths, tasks, samples = planned_grid(
        data, limit=_context_limit(resolved), model_name=resolved.name
    )
    with transaction.atomic():
        job = EvaluationJob.objects.create(
            org=org,
            created_by_key=api_key,
            model=resolved.name,
            base_model=resolved.base,
            fine_tuned_model=resolved.fine_tuned,
            suite=data["suite"],
            lengths=lengths,
            depths=depths,
            tasks=tasks,
            samples=samples,
            seed=data.get("seed", 0),
            queue=training_queue_for(org),
        )
        record_event(job, f"Evaluation created: {job.suite} on {job.model} at {lengths}.")
        pk = job.pk
        transaction.on_commit(
            lambda: EVALUATIONS.dispatch(
                pk,
                from_status=WorkStatus.QUEUED,
                queued_message=lambda row: f"Evaluation queued on {row.queue}.",
            )
        )
    return job


def cancel_evaluation(job: EvaluationJob) -> EvaluationJob:
    """A queued job is cancelled at once; a running one when its worker next reports."""
    with transaction.atomic():
        locked = EvaluationJob.objects.for_org(job.org).select_for_update().get(pk=job.pk)
        if locked.status in TERMINAL_STATUSES or locked.cancel_requested:
            return locked
        locked.cancel_requested = True
        fields = ["cancel_requested"]
        if locked.status == WorkStatus.QUEUED:
            locked.status, locked.finished_at = WorkStatus.CANCELLED, timezone.now()
            fields += ["status", "finished_at"]
        locked.save(update_fields=fields)
        record_event(locked, "Cancellation requested.")
    return locked


def save_heatmap(job: EvaluationJob, png: bytes) -> File:
    """The passkey (or ruler) heatmap as a result File of the org (served by
    GET /v1/files/{id}/content)."""
    return create_results_file(
        job.org,
        filename=f"{job.public_id}-heatmap.png",
        content=png,
        format="png",
        purpose=FilePurpose.EVALUATION_RESULTS,
    )
