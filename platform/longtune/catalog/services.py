"""What the catalog does to its rows: publish a finished job's model, delete one.

Why workers call this instead of writing rows: a training worker only knows what it uploaded
(where, how many bytes, the metrics CSV). The model's name, its storage layout, its context
spec and the result File are catalog and datasets rules, kept out of the Celery bridge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from longtune.api.errors import ApiError
from longtune.api.ids import new_public_id, public_id_prefix
from longtune.catalog.models import FineTunedModel
from longtune.datasets.models import File
from longtune.datasets.services import create_results_file
from longtune.storage import get_storage, org_prefix
from longtune.tenancy import audit
from longtune.tenancy.models import AuditAction

if TYPE_CHECKING:
    from gpu_runtime.contract import ContextSpec
    from longtune.finetuning.models import FineTuningJob

RESULTS_FILENAME = "step_metrics.csv"


@dataclass(frozen=True)
class ArtifactLocation:
    """Where a model's files go before its row exists (the worker uploads there first)."""

    public_id: str
    prefix: str


@dataclass(frozen=True)
class Published:
    model: FineTunedModel
    results_file: File


def fine_tuned_model_name(job: FineTuningJob) -> str:
    """OpenAI's shape: ``ft:<base>:<org>:<suffix>:<job id>`` (unique: the job id is). The base
    model's name even when the job continued from a fine-tuned model (as OpenAI names it):
    names do not grow with every generation; ``parent_model`` records the lineage."""
    return f"ft:{job.base_model.name}:{job.org.slug}:{job.suffix}:{job.public_id}"


def new_artifact_location(org_public_id: str) -> ArtifactLocation:
    """A fresh model id and its prefix, ``orgs/<org>/models/<model id>/``."""
    public_id = new_public_id(public_id_prefix(FineTunedModel))
    return ArtifactLocation(public_id, f"{org_prefix(org_public_id)}models/{public_id}/")


def context_spec_for(job: FineTuningJob) -> ContextSpec:
    """The context the job trained at: the spec it stored at planning, unchanged."""
    from longtune.finetuning.planning import context_spec_of

    return context_spec_of(job)


def publish_fine_tuned_model(
    job: FineTuningJob,
    *,
    location: ArtifactLocation,
    artifact_bytes: int,
    metrics_csv: bytes,
) -> Published:
    """The model row of a finished job whose artifact is already under ``location``, plus its
    step-metrics result File, atomically. ``context_length`` is written from the spec here and
    nowhere else."""
    context = context_spec_for(job)
    with transaction.atomic():
        results_file = create_results_file(job.org, filename=RESULTS_FILENAME, content=metrics_csv)
        model = FineTunedModel.objects.create(
            public_id=location.public_id,
            org=job.org,
            name=fine_tuned_model_name(job),
            job=job,
            base_model=job.base_model,
            parent_model=job.parent_model,
            method=job.method,
            context=context.to_dict(),
            context_length=context.target_length,
            artifact_prefix=location.prefix,
            artifact_bytes=artifact_bytes,
        )
    return Published(model, results_file)


CHECKPOINTS_KEPT = 3  # per-epoch checkpoint models kept per job (OpenAI keeps the last three)


def checkpoint_model_name(job: FineTuningJob, step: int) -> str:
    """OpenAI's ``fine_tuned_model_checkpoint``: ``<the job's model name>:ckpt-step-<n>``."""
    return f"{fine_tuned_model_name(job)}:ckpt-step-{step}"


def publish_checkpoint_model(
    job: FineTuningJob, *, step: int, location: ArtifactLocation, artifact_bytes: int
) -> FineTunedModel:
    """The model row of an epoch's checkpoint (artifact already under ``location``): served,
    evaluated and gated like the job's final model. Publishing it again (a resumed attempt
    redoing the epoch) keeps the first row."""
    context = context_spec_for(job)
    model, _ = FineTunedModel.objects.for_org(job.org).get_or_create(
        name=checkpoint_model_name(job, step),
        defaults={
            "public_id": location.public_id,
            "org": job.org,
            "checkpoint_of": job,
            "checkpoint_step": step,
            "base_model": job.base_model,
            "parent_model": job.parent_model,
            "method": job.method,
            "context": context.to_dict(),
            "context_length": context.target_length,
            "artifact_prefix": location.prefix,
            "artifact_bytes": artifact_bytes,
        },
    )
    return model


def prune_checkpoint_models(job: FineTuningJob, keep: int = CHECKPOINTS_KEPT) -> list[str]:
    """Delete the job's checkpoint models beyond the newest ``keep`` (artifact removed, row
    hidden: ``delete_fine_tuned_model``); one still in use (an endpoint) is kept. Returns the
    names deleted."""
    older = (
        FineTunedModel.objects.for_org(job.org)
        .filter(checkpoint_of=job, deleted_at__isnull=True)
        .order_by("-checkpoint_step")[keep:]
    )
    deleted = []
    for model in older:
        try:
            delete_fine_tuned_model(model)
        except ApiError:  # model_in_use: an endpoint serves it; it stays
            continue
        deleted.append(model.name)
    return deleted


# --------------------------------------------------------------------------- deletion

# "Is this model still in use?" asked of the apps that use models (inference registers one in
# its AppConfig.ready): the catalog knows no app above it. A check returns why, or None.
InUseCheck = Callable[[FineTunedModel], "str | None"]
_IN_USE_CHECKS: list[InUseCheck] = []


def register_in_use_check(check: InUseCheck) -> None:
    if check not in _IN_USE_CHECKS:
        _IN_USE_CHECKS.append(check)


def delete_fine_tuned_model(
    model: FineTunedModel, *, request: HttpRequest | None = None
) -> dict[str, object]:
    """Hide the model from its org, remove its artifact once the row says so, audit it; OpenAI's
    deletion object back. Refused (409 ``model_in_use``) while something still serves it."""
    with transaction.atomic():
        locked = FineTunedModel.objects.for_org(model.org).select_for_update().get(pk=model.pk)
        for check in _IN_USE_CHECKS:
            reason = check(locked)
            if reason:
                raise ApiError(
                    status=409,
                    code="model_in_use",
                    message=f"The model '{locked.name}' cannot be deleted: {reason}",
                    param="model",
                )
        prefix = locked.artifact_prefix
        locked.deleted_at = timezone.now()
        locked.artifact_bytes = 0  # frees the org's storage quota at once
        locked.save(update_fields=["deleted_at", "artifact_bytes"])
        audit.record(
            org=locked.org,
            action=AuditAction.MODEL_DELETED,
            target=locked,
            request=request,
            metadata={"name": locked.name},
        )
        transaction.on_commit(lambda: get_storage().delete_prefix(prefix))
    return {"id": locked.name, "object": "model", "deleted": True}
