"""The eval gate on POST /v1/endpoints: a model deploys only when its newest succeeded passkey
evaluation at its own context length meets ``min_passkey_accuracy``."""

from __future__ import annotations

import pytest
from django.utils import timezone

from longtune.evaluation.models import EvaluationJob
from longtune.inference.models import Endpoint
from tests.catalog.helpers import make_fine_tuned

pytestmark = pytest.mark.django_db
ENDPOINTS = "/v1/endpoints"


def evaluated(model, lengths, by_length, *, status="succeeded", org=None):
    return EvaluationJob.objects.create(
        org=org or model.org,
        model=model.name,
        base_model=model.base_model,
        fine_tuned_model=model,
        suite="passkey",
        lengths=lengths,
        depths=[0.5],
        status=status,
        finished_at=timezone.now(),
        results={"lengths": lengths, "by_length": by_length},
    )


def deploy(org_handle, model, threshold):
    body = {"model": model.name, "min_passkey_accuracy": threshold}
    return org_handle.client().post(ENDPOINTS, body, format="json")


def error_of(response):
    error = response.json()["error"]
    return response.status_code, error["code"], error["param"]


def test_no_evaluation_at_the_trained_context_is_refused_with_the_fix(org_a):
    model = make_fine_tuned(org_a.org)  # trained at 256
    evaluated(model, [64, 128], [1.0, 1.0])  # not at 256: does not count
    evaluated(model, [256], [1.0], status="failed")  # not succeeded: does not count
    response = deploy(org_a, model, 0.8)
    assert error_of(response) == (409, "evaluation_required", "min_passkey_accuracy")
    assert '"lengths": [256]' in response.json()["error"]["message"]
    assert not Endpoint.objects.for_org(org_a.org).exists()


def test_a_score_below_the_threshold_is_refused_and_the_newest_evaluation_decides(org_a):
    model = make_fine_tuned(org_a.org)
    evaluated(model, [128, 256], [1.0, 0.9])
    evaluated(model, [256], [0.5])  # newer, worse
    response = deploy(org_a, model, 0.8)
    assert error_of(response) == (409, "evaluation_below_threshold", "min_passkey_accuracy")
    assert "scored 0.50" in response.json()["error"]["message"]
    evaluated(model, [256, 512], [0.85, 0.1])  # newest: 0.85 at 256 passes
    created = deploy(org_a, model, 0.8)
    assert created.status_code == 201, created.content
    assert Endpoint.objects.for_org(org_a.org).get().fine_tuned_model == model


def test_another_orgs_evaluation_of_the_same_name_never_counts(org_a, org_b):
    model = make_fine_tuned(org_a.org)
    evaluated(model, [256], [1.0], org=org_b.org)
    assert error_of(deploy(org_a, model, 0.5))[1] == "evaluation_required"


def test_without_a_threshold_nothing_changes_and_bad_thresholds_are_400(org_a):
    model = make_fine_tuned(org_a.org)
    assert org_a.client().post(ENDPOINTS, {"model": model.name}, format="json").status_code == 201
    assert error_of(deploy(org_a, model, 1.5)) == (400, "max_value", "min_passkey_accuracy")
    assert error_of(deploy(org_a, model, "high")) == (400, "invalid", "min_passkey_accuracy")
