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


# --------------------------------------------------------------------------- the org's gate

GATE = "/v1/evaluation_gate"


def set_gate(org_handle, threshold, role="admin"):
    return org_handle.client(role).put(GATE, {"min_passkey_accuracy": threshold}, format="json")


def test_org_gate_is_read_by_all_set_by_admins_and_audited(org_a, org_b):
    assert org_a.client("member").get(GATE).json() == {
        "object": "evaluation_gate",
        "min_passkey_accuracy": None,
        "updated_at": None,
    }
    assert set_gate(org_a, 0.8, role="member").status_code == 403
    assert error_of(set_gate(org_a, 1.2)) == (400, "max_value", "min_passkey_accuracy")
    bad = org_a.client("admin").put(GATE, {"min_passkey_accuracy": 0.5, "x": 1}, format="json")
    assert error_of(bad) == (400, "unknown_field", "x")
    saved = set_gate(org_a, 0.8)
    assert saved.status_code == 200 and saved.json()["min_passkey_accuracy"] == 0.8
    assert org_a.client("viewer").get(GATE).json()["min_passkey_accuracy"] == 0.8
    assert org_b.client().get(GATE).json()["min_passkey_accuracy"] is None  # per org
    actions = [e["action"] for e in org_a.client().get("/v1/audit_logs").json()["data"]]
    assert "evaluation_gate.changed" in actions
    assert set_gate(org_a, None).json()["min_passkey_accuracy"] is None  # off again


def test_org_gate_refuses_fine_tunes_without_a_passing_evaluation(org_a):
    model = make_fine_tuned(org_a.org)
    set_gate(org_a, 0.9)
    plain = org_a.client().post(ENDPOINTS, {"model": model.name}, format="json")
    assert error_of(plain) == (409, "evaluation_required", "model")
    assert "organization's evaluation gate" in plain.json()["error"]["message"]
    evaluated(model, [256], [0.85])
    # the request's own, lower threshold cannot lower the org's
    assert error_of(deploy(org_a, model, 0.5)) == (409, "evaluation_below_threshold", "model")
    # a request stricter than the org's decides, and names its own param
    evaluated(model, [256], [0.95])
    assert error_of(deploy(org_a, model, 0.99)) == (
        409,
        "evaluation_below_threshold",
        "min_passkey_accuracy",
    )
    assert org_a.client().post(ENDPOINTS, {"model": model.name}, format="json").status_code == 201
    # base models are not the org's fine-tunes: the org gate does not apply to them
    base = org_a.client().post(ENDPOINTS, {"model": model.base_model.name}, format="json")
    assert base.status_code == 201, base.content


def test_starting_a_stopped_endpoint_checks_the_gate_again(org_a):
    model = make_fine_tuned(org_a.org)
    evaluated(model, [256], [0.9])
    created = deploy(org_a, model, 0.8)
    assert created.status_code == 201, created.content
    assert created.json()["min_passkey_accuracy"] == 0.8
    url = f"{ENDPOINTS}/{created.json()['id']}"
    assert org_a.client().post(f"{url}/stop").json()["status"] == "stopped"

    evaluated(model, [256], [0.6])  # re-evaluated since: now below the endpoint's threshold
    refused = org_a.client().post(f"{url}/start")
    assert error_of(refused) == (409, "evaluation_below_threshold", "min_passkey_accuracy")
    assert org_a.client().get(url).json()["status"] == "stopped"

    evaluated(model, [256], [0.85])
    set_gate(org_a, 0.9)  # the org raised its gate meanwhile
    assert error_of(org_a.client().post(f"{url}/start")) == (
        409,
        "evaluation_below_threshold",
        "model",
    )
    set_gate(org_a, None)
    started = org_a.client().post(f"{url}/start")
    assert started.status_code == 200 and started.json()["status"] == "pending"
