"""Factories for the generated tenant-isolation and fuzz tests (tests/platform/)."""

from __future__ import annotations

from longtune.evaluation.models import EvaluationJob
from tests.finetuning.helpers import make_base_model
from tests.org_factories import org_object_factory


@org_object_factory(EvaluationJob)
def make_evaluation(org):
    base = make_base_model()
    return EvaluationJob.objects.create(
        org=org, model=base.name, base_model=base, suite="passkey", lengths=[32], depths=[0.5]
    )
