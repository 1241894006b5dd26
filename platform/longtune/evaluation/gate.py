"""The eval gate: deploy a model only when its passkey evaluation at its own context passed.

Why at deploy time: a long-context fine-tune that no longer finds a fact at the length it was
trained for is the failure customers notice last and mind most. A deploy is refused (409,
coded) unless the org's newest succeeded passkey evaluation of that model covers the model's
context length and scored at least the threshold there. The refusal says which evaluation to
run. The threshold is the stricter of two:

* the endpoint's own ``min_passkey_accuracy`` (POST /v1/endpoints; kept on the endpoint), for
  any model;
* the org's gate (``EvaluationGate``, PUT /v1/evaluation_gate), for every fine-tuned model of
  the org -- an org policy a single request cannot lower.

Both are checked when an endpoint is created AND when a stopped one is started again (its
model may have been re-evaluated, or the org's gate raised, in between).
"""

from __future__ import annotations

from longtune.api.errors import ApiError
from longtune.catalog.resolution import ResolvedModel
from longtune.compute.models import WorkStatus
from longtune.evaluation.models import EvaluationGate, EvaluationJob, Suite
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


ENDPOINT_PARAM = "min_passkey_accuracy"  # the endpoint's own threshold
ORG_GATE_PARAM = "model"  # the org's gate refuses the model itself


def org_gate_threshold(org: Organization) -> float | None:
    gate = EvaluationGate.objects.for_org(org).first()
    return gate.min_passkey_accuracy if gate is not None else None


def required_threshold(
    org: Organization, resolved: ResolvedModel, endpoint_threshold: float | None
) -> tuple[float, str] | None:
    """(threshold, the param that imposes it) for deploying ``resolved``, or None: the
    stricter of the endpoint's own threshold and the org's gate (fine-tuned models only)."""
    candidates = []
    if endpoint_threshold is not None:
        candidates.append((float(endpoint_threshold), ENDPOINT_PARAM))
    org_threshold = org_gate_threshold(org) if resolved.fine_tuned is not None else None
    if org_threshold is not None:
        candidates.append((float(org_threshold), ORG_GATE_PARAM))
    return max(candidates, key=lambda c: c[0]) if candidates else None


def ensure_deployable(
    org: Organization, resolved: ResolvedModel, endpoint_threshold: float | None
) -> None:
    """Raise the gate's coded 409 unless ``resolved`` may be deployed (create or start)."""
    required = required_threshold(org, resolved, endpoint_threshold)
    if required is not None:
        ensure_evaluated(org, resolved, required[0], param=required[1])


def ensure_evaluated(
    org: Organization, resolved: ResolvedModel, min_accuracy: float, *, param: str = ENDPOINT_PARAM
) -> None:
    length = resolved.context_length
    required = f"passkey accuracy >= {min_accuracy:.2f} at {length} tokens" + (
        ", required by the organization's evaluation gate" if param == ORG_GATE_PARAM else ""
    )
    found = passkey_score_at(org, resolved.name, length)
    if found is None:
        raise ApiError(
            status=409,
            code="evaluation_required",
            message=(
                f"'{resolved.name}' has no succeeded passkey evaluation at its context length "
                f"{length} ({required}). Run one first: POST /v1/evaluations with "
                f'{{"model": "{resolved.name}", "suite": "passkey", "lengths": [{length}]}}.'
            ),
            param=param,
        )
    score, evaluation = found
    if score < min_accuracy:
        raise ApiError(
            status=409,
            code="evaluation_below_threshold",
            message=(
                f"'{resolved.name}' scored {score:.2f} on passkey retrieval at {length} tokens "
                f"({evaluation}), below the required {min_accuracy:.2f} ({required})."
            ),
            param=param,
        )
