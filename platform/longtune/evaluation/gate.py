"""The eval gate: deploy a model only when its passkey evaluation at its own context passed.

Why at deploy time: a long-context fine-tune that no longer finds a fact at the length it was
trained for is the failure customers notice last and mind most. An endpoint created with
``min_passkey_accuracy`` is refused (409, coded) unless the org's newest succeeded passkey
evaluation of that model covers the model's context length and scored at least the threshold
there. The refusal says which evaluation to run.
"""

from __future__ import annotations

from longtune.api.errors import ApiError
from longtune.catalog.resolution import ResolvedModel
from longtune.compute.models import WorkStatus
from longtune.evaluation.models import EvaluationJob, Suite
from longtune.tenancy.models import Organization

RECENT = 50  # evaluations looked at, newest first


def passkey_score_at(org: Organization, model: str, length: int) -> tuple[float, str] | None:
    """(accuracy at ``length``, evaluation id) of the newest succeeded passkey evaluation of
    ``model`` that includes ``length``; None when there is none."""
    recent = (
        EvaluationJob.objects.for_org(org)
        .filter(model=model, suite=Suite.PASSKEY, status=WorkStatus.SUCCEEDED)
        .order_by("-finished_at", "-pk")
        .only("public_id", "results")[:RECENT]
    )
    for job in recent:
        lengths = (job.results or {}).get("lengths") or []
        if length in lengths:
            return float(job.results["by_length"][lengths.index(length)]), job.public_id
    return None


def ensure_evaluated(org: Organization, resolved: ResolvedModel, min_accuracy: float) -> None:
    length = resolved.context_length
    found = passkey_score_at(org, resolved.name, length)
    if found is None:
        raise ApiError(
            status=409,
            code="evaluation_required",
            message=(
                f"'{resolved.name}' has no succeeded passkey evaluation at its context length "
                f"{length}. Run one first: POST /v1/evaluations with "
                f'{{"model": "{resolved.name}", "suite": "passkey", "lengths": [{length}]}}.'
            ),
            param="min_passkey_accuracy",
        )
    score, evaluation = found
    if score < min_accuracy:
        raise ApiError(
            status=409,
            code="evaluation_below_threshold",
            message=(
                f"'{resolved.name}' scored {score:.2f} on passkey retrieval at {length} tokens "
                f"({evaluation}), below the required {min_accuracy:.2f}."
            ),
            param="min_passkey_accuracy",
        )
