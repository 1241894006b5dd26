"""A fine-tune job's ``evaluation`` option: checked at creation against the context the job
trains at (coded 400s naming the nested field), and on success the job creates that
evaluation of its model -- once -- and links it from its events and ``evaluation.id``."""

from __future__ import annotations

import pytest

from longtune.evaluation.models import EvaluationJob
from longtune.finetuning.models import FineTuningJob, JobEvent
from longtune.finetuning.services import evaluate_fine_tuned_model
from longtune.tenancy.models import OrgQuota
from tests.catalog.helpers import make_fine_tuned
from tests.conftest import api_client
from tests.finetuning.conftest import FAST_WORKER_ENV, TINY_ORIGINAL_CONTEXT, wait_for
from tests.finetuning.helpers import chat_examples, make_base_model, make_file

JOBS = "/v1/fine_tuning/jobs"


@pytest.fixture
def base(db):
    return make_base_model(original=64, maximum=1024)


def create(org_handle, file, **extra):
    body = {"model": "tiny-test", "training_file": file.public_id, "context_length": 256, **extra}
    response = org_handle.client().post(JOBS, body, format="json")
    # finished at once: the free plan runs one job at a time
    FineTuningJob.objects.for_org(org_handle.org).update(status="succeeded")
    return response


def error_of(response):
    error = response.json()["error"]
    return response.status_code, error["code"], error["param"]


@pytest.mark.django_db
def test_option_is_resolved_and_stored_at_creation(org_a, base):
    file = make_file(org_a.org)
    created = create(org_a, file, evaluation={"suite": "passkey", "samples": 2})
    assert created.status_code == 201, created.content
    expected = {"suite": "passkey", "lengths": [256], "depths": [0.1, 0.5, 0.9], "tasks": [],
                "samples": 2, "seed": 0, "id": None}  # fmt: skip
    assert created.json()["evaluation"] == expected
    assert FineTuningJob.objects.for_org(org_a.org).get().evaluation == expected
    perplexity = create(org_a, file, evaluation={"suite": "perplexity", "lengths": [128, 64]})
    assert perplexity.json()["evaluation"]["lengths"] == [64, 128]
    assert perplexity.json()["evaluation"]["depths"] == []
    assert create(org_a, file).json()["evaluation"] is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ({"suite": "passkey", "lengths": [512]},
         (400, "context_length_exceeded", "evaluation.lengths")),
        ({"suite": "passkey", "lengths": [64, 128, 256], "depths": [0.1, 0.5, 0.9], "samples": 50,
          "seed": 1}, (400, "evaluation_too_large", "evaluation.samples")),
        ({"suite": "ruler-9000"}, (400, "invalid_choice", "evaluation.suite")),
        ({"suite": "perplexity", "depths": [0.5]}, (400, "invalid", "evaluation.depths")),
        ("passkey", (400, "invalid", "evaluation.non_field_errors")),
    ],
)  # fmt: skip
def test_bad_options_are_coded_400s(org_a, base, option, expected):
    response = create(org_a, make_file(org_a.org), evaluation=option)
    assert error_of(response)[:2] == expected[:2], response.content
    assert response.json()["error"]["param"].startswith(expected[2].split(".non_field")[0])
    assert not FineTuningJob.objects.for_org(org_a.org).exists()


@pytest.mark.django_db
def test_a_succeeded_job_creates_its_evaluation_once(org_a, org_b):
    model = make_fine_tuned(org_a.org)  # trained at 256
    job = model.job
    job.evaluation = {"suite": "passkey", "lengths": [128, 256], "depths": [0.5], "samples": 1,
                      "seed": 4, "id": None}  # fmt: skip
    job.save(update_fields=["evaluation"])
    evaluation_id = evaluate_fine_tuned_model(job.pk)
    evaluation = EvaluationJob.objects.for_org(org_a.org).get()
    assert evaluation.public_id == evaluation_id
    assert (evaluation.model, evaluation.fine_tuned_model) == (model.name, model)
    assert (evaluation.lengths, evaluation.depths, evaluation.seed) == ([128, 256], [0.5], 4)
    assert evaluate_fine_tuned_model(job.pk) == evaluation_id  # once, whoever calls again
    assert EvaluationJob.objects.for_org(org_a.org).count() == 1
    payload = org_a.client().get(f"{JOBS}/{job.public_id}").json()
    assert payload["evaluation"]["id"] == evaluation_id
    events = org_a.client().get(f"{JOBS}/{job.public_id}/events").json()["data"]
    assert events[0]["data"] == {"evaluation": evaluation_id}
    assert not EvaluationJob.objects.for_org(org_b.org).exists()


@pytest.mark.django_db
def test_a_refused_evaluation_is_a_warning_not_a_failed_job(org_a):
    model = make_fine_tuned(org_a.org)  # trained at 256
    job = model.job
    job.evaluation = {"suite": "passkey", "lengths": [512], "depths": [0.5], "samples": 1,
                      "seed": 0, "id": None}  # fmt: skip
    job.save(update_fields=["evaluation"])
    assert evaluate_fine_tuned_model(job.pk) is None
    event = JobEvent.objects.for_org(org_a.org).filter(job=job).order_by("-pk").first()
    assert event.level == "warn" and "not created" in event.message
    assert event.data == {"code": "context_length_exceeded"}
    assert FineTuningJob.objects.for_org(org_a.org).get(pk=job.pk).status == "succeeded"
    running = make_fine_tuned(org_a.org).job
    running.status, running.evaluation = "running", {**job.evaluation, "lengths": [256]}
    running.save()
    assert evaluate_fine_tuned_model(running.pk) is None  # only a succeeded job evaluates
    assert not EvaluationJob.objects.for_org(org_a.org).exists()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_fine_tune_then_its_evaluation_on_a_real_worker(
    make_org, start_worker, shared_storage, tiny_base_dir
):
    handle = make_org("Auto Eval", plan="pro")
    OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)  # we poll
    # Trained (and so evaluated) at 256: room for the ~150-token passkey prompt of the tiny
    # tokenizer (tests/evaluation/test_evaluations_api.py); the plumbing is under test here.
    make_base_model("tiny-autoeval", tiny_base_dir, original=TINY_ORIGINAL_CONTEXT, maximum=1024)
    worker = start_worker(queues="cpu,gpu", **FAST_WORKER_ENV)
    client = api_client(handle.key())
    file = make_file(handle.org, chat_examples(6))
    created = client.post(
        JOBS,
        {"model": "tiny-autoeval", "training_file": file.public_id, "context_length": 256,
         "hyperparameters": {"n_epochs": 1, "batch_size": 1}, "lora": {"r": 4, "alpha": 8},
         "evaluation": {"suite": "passkey", "depths": [0.5]}},
        format="json",
    )  # fmt: skip
    assert created.status_code == 201, created.content
    url = f"{JOBS}/{created.json()['id']}"
    job = wait_for(
        lambda: (j := client.get(url).json())["evaluation"]["id"] or j["status"] == "failed" and j,
        timeout=300,
        what="the fine-tune and its evaluation",
        worker=worker,
    )
    job = client.get(url).json()
    assert job["status"] == "succeeded", (job["error"], worker.read_log()[-3000:])
    evaluation_url = f"/v1/evaluations/{job['evaluation']['id']}"
    evaluation = wait_for(
        lambda: (e := client.get(evaluation_url).json())["status"] in ("succeeded", "failed") and e,
        timeout=240,
        what="the evaluation",
        worker=worker,
    )
    assert evaluation["status"] == "succeeded", (evaluation["error"], worker.read_log()[-3000:])
    assert evaluation["model"] == job["fine_tuned_model"]
    assert evaluation["results"]["lengths"] == [256] and evaluation["result_file"]
    messages = [e["message"] for e in client.get(f"{url}/events").json()["data"]]
    assert any(m.startswith(f"Evaluation {evaluation['id']} created for ") for m in messages)
