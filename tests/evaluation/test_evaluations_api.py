"""/v1/evaluations: validation with coded 4xx, tenancy, cancel -- and the end-to-end run on a
real worker (passkey heatmap as a result file, perplexity by length)."""

from __future__ import annotations

import pytest

from longtune.compute.models import WorkStatus
from longtune.evaluation.models import EvaluationJob, RulerTask
from longtune.tenancy.models import OrgQuota
from tests.catalog.helpers import make_fine_tuned
from tests.conftest import api_client
from tests.finetuning.conftest import FAST_WORKER_ENV, TINY_ORIGINAL_CONTEXT, wait_for
from tests.finetuning.helpers import make_base_model

EVALS = "/v1/evaluations"


def error_of(response):
    error = response.json()["error"]
    return response.status_code, error["code"], error["param"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"suite": "passkey", "lengths": [32]}, (400, "required", "model")),
        ({"model": "tiny-ev", "suite": "mmlu", "lengths": [32]}, (400, "invalid_choice", "suite")),
        ({"model": "tiny-ev", "suite": "passkey", "lengths": []}, (400, "min_length", "lengths")),
        ({"model": "tiny-ev", "suite": "passkey", "lengths": [8]}, (400, "min_value", "lengths.0")),
        ({"model": "tiny-ev", "suite": "passkey", "lengths": [4096]},
         (400, "context_length_exceeded", "lengths")),
        ({"model": "tiny-ev", "suite": "perplexity", "lengths": [32], "depths": [0.5]},
         (400, "invalid", "depths")),
        ({"model": "tiny-ev", "suite": "passkey", "lengths": [32], "depths": [1.5]},
         (400, "max_value", "depths.0")),
        ({"model": "tiny-ev", "suite": "passkey", "lengths": [16, 32, 48, 64],
          "depths": [0, 0.25, 0.5, 0.75, 1], "samples": 50},
         (400, "evaluation_too_large", "samples")),
        ({"model": "nope", "suite": "passkey", "lengths": [32]}, (404, "model_not_found", "model")),
        ({"model": "tiny-ev", "suite": "ruler", "lengths": [32], "tasks": ["qa_hotpot"]},
         (400, "invalid_choice", "tasks.0")),
        ({"model": "tiny-ev", "suite": "ruler", "lengths": [32], "tasks": []},
         (400, "min_length", "tasks")),
        ({"model": "tiny-ev", "suite": "ruler", "lengths": [32],
          "tasks": ["niah_single", "niah_single"]}, (400, "invalid", "tasks")),
        ({"model": "tiny-ev", "suite": "passkey", "lengths": [32], "tasks": ["niah_single"]},
         (400, "invalid", "tasks")),
        ({"model": "tiny-ev", "suite": "ruler", "lengths": [32], "depths": [0.5]},
         (400, "invalid", "depths")),
        ({"model": "tiny-ev", "suite": "ruler", "lengths": [16, 32, 48, 64], "samples": 20},
         (400, "evaluation_too_large", "samples")),  # 4 lengths x 6 tasks x 20 > 400
    ],
)  # fmt: skip
def test_bad_requests_are_coded_and_create_nothing(org_a, body, expected):
    make_base_model("tiny-ev", original=64)
    assert error_of(org_a.client().post(EVALS, body, format="json")) == expected
    assert not EvaluationJob.objects.for_org(org_a.org).exists()


@pytest.mark.django_db
def test_another_orgs_fine_tune_cannot_be_evaluated(org_a, org_b):
    theirs = make_fine_tuned(org_b.org)
    body = {"model": theirs.name, "suite": "passkey", "lengths": [32]}
    assert error_of(org_a.client().post(EVALS, body, format="json"))[:2] == (404, "model_not_found")


@pytest.mark.django_db(transaction=True)
def test_queued_evaluation_cancels_at_once_and_viewers_cannot_create(org_a, monkeypatch):
    from longtune.compute import broker

    sent = []
    monkeypatch.setattr(broker, "send", lambda task, args, queue: sent.append((task, args, queue)))
    make_base_model("tiny-ev", original=64)
    body = {"model": "tiny-ev", "suite": "passkey", "lengths": [48, 32, 48]}
    created = org_a.client().post(EVALS, body, format="json")
    assert created.status_code == 201, created.content
    data = created.json()
    assert (data["status"], data["lengths"], data["depths"]) == (
        "queued",
        [32, 48],
        [0.1, 0.5, 0.9],
    )
    assert sent == [
        ("longtune.evaluation.run", [EvaluationJob.objects.for_org(org_a.org).get().pk, 1], "gpu")
    ]
    cancelled = org_a.client().post(f"{EVALS}/{data['id']}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    viewer = org_a.client("viewer").post(EVALS, body, format="json")
    assert error_of(viewer)[:2] == (403, "insufficient_role")
    ruler = org_a.client().post(EVALS, {"model": "tiny-ev", "suite": "ruler", "lengths": [64]},
                                format="json").json()  # fmt: skip
    assert ruler["tasks"] == list(RulerTask.values) and ruler["depths"] == []
    org_a.client().post(f"{EVALS}/{ruler['id']}/cancel")
    listed = org_a.client("viewer").get(EVALS).json()
    assert [e["id"] for e in listed["data"]] == [ruler["id"], data["id"]]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_evaluations_run_on_a_real_worker(make_org, start_worker, shared_storage, tiny_base_dir):
    handle = make_org("Eval E2E", plan="pro")
    OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)  # we poll
    # The tiny tokenizer needs ~150 tokens for the key sentence and the question, more than the
    # tiny base's native 64: it is registered as a 1024-token base (RoPE extrapolation; its
    # random weights score 0 either way -- the plumbing is under test here).
    assert TINY_ORIGINAL_CONTEXT < 256
    make_base_model("tiny-ev", tiny_base_dir, original=1024, maximum=1024)
    worker = start_worker(queues="cpu,gpu", **FAST_WORKER_ENV)
    client = api_client(handle.key())

    def run(body):
        created = client.post(EVALS, body, format="json")
        assert created.status_code == 201, created.content
        url = f"{EVALS}/{created.json()['id']}"
        return wait_for(
            lambda: (j := client.get(url).json())["status"] in ("succeeded", "failed") and j,
            timeout=240,
            what="the evaluation",
            worker=worker,
        )

    passkey = run({"model": "tiny-ev", "suite": "passkey", "lengths": [256, 512],
                   "depths": [0.2, 0.8], "samples": 1})  # fmt: skip
    assert passkey["status"] == "succeeded", (passkey["error"], worker.read_log()[-3000:])
    results = passkey["results"]
    assert len(results["accuracy"]) == 2 and len(results["accuracy"][0]) == 2
    assert results["effective_context"]["absolute_threshold"] == 0.856
    assert passkey["progress"]["done"] == passkey["progress"]["total"] == 4
    png = client.get(f"/v1/files/{passkey['result_file']}/content")
    assert png.status_code == 200
    assert b"".join(png.streaming_content)[:8] == b"\x89PNG\r\n\x1a\n"
    file = client.get(f"/v1/files/{passkey['result_file']}").json()
    assert file["purpose"] == "evaluation-results"

    ruler = run({"model": "tiny-ev", "suite": "ruler", "lengths": [1024],
                 "tasks": ["niah_multikey", "variable_tracking"]})  # fmt: skip
    assert ruler["status"] == "succeeded", (ruler["error"], worker.read_log()[-3000:])
    assert set(ruler["results"]["accuracy"]) == {"niah_multikey", "variable_tracking"}
    assert ruler["results"]["effective_context"]["relative_threshold"] == 0.9
    assert ruler["progress"]["done"] == 2 and ruler["result_file"] != passkey["result_file"]
    heatmap = client.get(f"/v1/files/{ruler['result_file']}/content")
    assert b"".join(heatmap.streaming_content)[:8] == b"\x89PNG\r\n\x1a\n"

    perplexity = run({"model": "tiny-ev", "suite": "perplexity", "lengths": [64, 256]})
    assert perplexity["status"] == "succeeded", perplexity["error"]
    assert perplexity["results"]["lengths"] == [64, 256]
    assert all(p > 1 for p in perplexity["results"]["perplexity"])
    events = [e["message"] for e in client.get(f"{EVALS}/{perplexity['id']}/events").json()["data"]]
    assert any(m.startswith("Evaluation started on ") for m in events)
    assert any(m.startswith("Evaluation done: perplexity") for m in events)
    assert (
        EvaluationJob.objects.for_org(handle.org).filter(status=WorkStatus.SUCCEEDED).count() == 3
    )
