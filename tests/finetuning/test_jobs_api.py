"""POST/GET /v1/fine_tuning/jobs: validation with coded 4xx, idempotency, quotas, cancel,
events and checkpoints. (No worker here: on_commit dispatch does not run in these tests.)"""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator

from gpu_runtime.rope import DEFAULT_ROPE_METHOD
from longtune.datasets.models import FileStatus
from longtune.finetuning.models import FineTuningJob, JobCheckpoint
from longtune.finetuning.quotas import training_tokens_this_month
from longtune.tenancy.models import OrgQuota
from longtune.tenancy.quotas import current_usage
from tests.finetuning.helpers import make_base_model, make_file, make_job

pytestmark = pytest.mark.django_db
JOBS = "/v1/fine_tuning/jobs"


@pytest.fixture
def base(db):
    return make_base_model(original=64, maximum=1024)


def create(client, body, **headers):
    return client.post(JOBS, body, format="json", **headers)


def body_for(file, **extra):
    return {"model": "tiny-test", "training_file": file.public_id, **extra}


def assert_error(response, status, code, param):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error


def test_create_resolves_auto_and_extensions(org_a, base):
    file = make_file(org_a.org, num_tokens=1000)
    response = create(
        org_a.client(),
        body_for(
            file,
            suffix="bot",
            seed=7,
            context_length=256,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
            lora={"r": 4},
        ),
    )
    assert response.status_code == 201, response.content
    job = response.json()
    assert job["object"] == "fine_tuning.job" and job["id"].startswith("ftjob-")
    assert job["status"] == "validating_files"
    # "auto" (finetuning.auto): a file without token stats reads as full-context documents,
    # so rows stay 256 long; a short LoRA run takes twice the base learning rate.
    assert job["hyperparameters"] == {
        "n_epochs": 2,
        "batch_size": 1,
        "learning_rate_multiplier": 2.0,
        "sequence_length": 256,
    }
    # 256 / 64 with the runtime's default method (chosen by the context-extension benchmark)
    assert job["rope_scaling"] == {"type": DEFAULT_ROPE_METHOD, "factor": 4.0}
    assert job["lora"]["r"] == 4 and job["lora"]["alpha"] == 32.0
    assert job["estimated_tokens"] == 2000  # num_tokens × epochs
    assert job["seed"] == 7 and job["suffix"] == "bot"
    assert job["organization_id"] == org_a.org.public_id
    events = org_a.client().get(f"{JOBS}/{job['id']}/events").json()["data"]
    assert events[0]["message"].startswith("Created fine-tuning job")


def test_legacy_hyperparameters_and_factor_only(org_a, base):
    file = make_file(org_a.org)
    response = create(
        org_a.client(),
        body_for(
            file, hyperparameters={"n_epochs": 1}, rope_scaling={"type": "linear", "factor": 8}
        ),
    )
    assert response.status_code == 201, response.content
    job = response.json()
    assert job["hyperparameters"]["n_epochs"] == 1
    assert job["context_length"] == 512 and job["rope_scaling"] == {"type": "linear", "factor": 8.0}


@pytest.mark.parametrize(
    ("extra", "status", "code", "param"),
    [
        ({"model": "no-such-model"}, 404, "model_not_found", "model"),
        ({"context_length": 4096}, 400, "context_length_too_large", "context_length"),
        ({"context_length": 8}, 400, "min_value", "context_length"),
        (
            {"context_length": 256, "rope_scaling": {"factor": 2}},
            400,
            "rope_factor_mismatch",
            "rope_scaling.factor",
        ),
        ({"rope_scaling": {"type": "magic"}}, 400, "invalid_choice", "rope_scaling.type"),
        ({"lora": {"r": 4}, "full": True}, 400, "conflicting_parameters", "full"),
        ({"hyperparameters": {"n_epochs": 0}}, 400, "min_value", "hyperparameters.n_epochs"),
        (
            {"hyperparameters": {"batch_size": "big"}},
            400,
            "invalid_type",
            "hyperparameters.batch_size",
        ),
        (
            {
                "hyperparameters": {"n_epochs": 1},
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": {"n_epochs": 2}},
                },
            },
            400,
            "conflicting_parameters",
            "hyperparameters",
        ),
        ({"suffix": "has:colon"}, 400, "invalid", "suffix"),
        ({"surprise": 1}, 400, "unknown_parameter", "surprise"),
        ({"method": {"type": "dpo"}}, 400, "invalid_choice", "method.type"),
    ],
)
def test_bad_requests_are_coded_4xx(org_a, base, extra, status, code, param):
    file = make_file(org_a.org)
    assert_error(create(org_a.client(), {**body_for(file), **extra}), status, code, param)
    assert not FineTuningJob.objects.for_org(org_a.org).exists()


@pytest.mark.parametrize("factor", [None, 4])
def test_a_length_dependent_rope_method_is_refused_with_its_reason(org_a, base, factor):
    """dynamic NTK is a RoPE method gpu_runtime knows, but served in chunks it is not the model
    trained (benchmarks/results/chunked_prefill_rope_bfloat16.md): its own code, the field,
    what to use instead -- and the schema no longer offers it."""
    rope = {"type": "dynamic", **({"factor": factor} if factor else {})}
    file = make_file(org_a.org)
    response = create(
        org_a.client(), {**body_for(file), "context_length": 256, "rope_scaling": rope}
    )
    assert_error(response, 400, "rope_method_not_servable", "rope_scaling.type")
    message = response.json()["error"]["message"]
    assert "'dynamic'" in message and "'yarn'" in message and "chunks" in message
    assert not FineTuningJob.objects.for_org(org_a.org).exists()
    schema = SchemaGenerator().get_schema(request=None, public=True)
    offered = schema["components"]["schemas"]["RopeScalingRequest"]["properties"]["type"]
    enum = (
        offered.get("enum")
        or schema["components"]["schemas"][offered["$ref"].split("/")[-1]]["enum"]
    )
    assert "dynamic" not in enum and {"yarn", "ntk", "linear"} <= set(enum)


def test_file_checks(org_a, org_b, base):
    client = org_a.client()
    pending = make_file(org_a.org, status=FileStatus.PROCESSING)
    assert_error(create(client, body_for(pending)), 400, "file_not_ready", "training_file")
    foreign = make_file(org_b.org)
    assert_error(create(client, body_for(foreign)), 404, "file_not_found", "training_file")
    mine = make_file(org_a.org)
    assert_error(
        create(client, body_for(mine, validation_file=foreign.public_id)),
        404,
        "file_not_found",
        "validation_file",
    )
    results = make_file(org_a.org, purpose="fine-tune-results")
    assert_error(create(client, body_for(results)), 400, "invalid_file_purpose", "training_file")


def test_private_base_model_is_visible_to_its_org_only(org_a, org_b, base):
    make_base_model("acme-private", is_public=False, org=org_b.org)
    file = make_file(org_a.org)
    response = create(org_a.client(), {**body_for(file), "model": "acme-private"})
    assert_error(response, 404, "model_not_found", "model")
    models = {m["id"] for m in org_b.client().get("/v1/models").json()["data"]}
    assert {"acme-private", "tiny-test"} <= models
    assert "acme-private" not in {m["id"] for m in org_a.client().get("/v1/models").json()["data"]}


def test_idempotency_key(org_a, base):
    client = org_a.client()
    file = make_file(org_a.org)
    first = create(client, body_for(file), HTTP_IDEMPOTENCY_KEY="abc-1")
    again = create(client, body_for(file), HTTP_IDEMPOTENCY_KEY="abc-1")
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    other = create(client, body_for(file, seed=3), HTTP_IDEMPOTENCY_KEY="abc-1")
    assert_error(other, 409, "idempotency_conflict", "Idempotency-Key")
    assert FineTuningJob.objects.for_org(org_a.org).count() == 1
    too_long = create(client, body_for(file), HTTP_IDEMPOTENCY_KEY="k" * 300)
    assert_error(too_long, 400, "invalid_idempotency_key", "Idempotency-Key")


def test_concurrent_jobs_quota(org_a, base):
    OrgQuota.objects.create(org=org_a.org, max_concurrent_jobs=1)
    client = org_a.client()
    file = make_file(org_a.org)
    assert create(client, body_for(file)).status_code == 201
    response = create(client, body_for(file))
    assert_error(response, 429, "quota_exceeded", "max_concurrent_jobs")
    # A finished job frees its slot.
    FineTuningJob.objects.for_org(org_a.org).update(status="succeeded", trained_tokens=10)
    assert create(client, body_for(file)).status_code == 201


def test_monthly_token_budget_is_reserved_then_reconciled(org_a, base):
    OrgQuota.objects.create(org=org_a.org, monthly_training_tokens=5000, max_concurrent_jobs=10)
    client = org_a.client()
    file = make_file(org_a.org, num_tokens=1000)
    hp = {"hyperparameters": {"n_epochs": 3}}
    first = create(client, body_for(file, **hp))
    assert first.status_code == 201
    assert training_tokens_this_month(org_a.org) == 3000
    assert current_usage(org_a.org)["monthly_training_tokens"] == 3000
    assert_error(
        create(client, body_for(file, **hp)), 429, "quota_exceeded", "monthly_training_tokens"
    )
    # The first job ends having trained only 500 tokens: the rest goes back to the budget.
    FineTuningJob.objects.unscoped_across_orgs().filter(public_id=first.json()["id"]).update(
        status="cancelled", trained_tokens=500
    )
    assert training_tokens_this_month(org_a.org) == 500
    assert create(client, body_for(file, **hp)).status_code == 201


def test_storage_quota(org_a, base):
    file = make_file(org_a.org)
    OrgQuota.objects.create(org=org_a.org, storage_bytes=file.scrubbed_bytes - 1)
    assert_error(create(org_a.client(), body_for(file)), 429, "quota_exceeded", "storage_bytes")


def test_list_retrieve_and_pagination(org_a):
    ids = [make_job(org_a.org).public_id for _ in range(3)]
    client = org_a.client()
    page = client.get(JOBS, {"limit": 2}).json()
    assert [j["id"] for j in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    rest = client.get(JOBS, {"limit": 2, "after": page["last_id"]}).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]] and rest["has_more"] is False
    job = client.get(f"{JOBS}/{ids[1]}").json()
    assert job["progress"] == {
        "step": 0,
        "total_steps": None,
        "loss": None,
        "tokens_per_second": None,
        "eta_seconds": None,
    }


def test_cancel(org_a):
    client = org_a.client()
    queued = make_job(org_a.org, status="queued")
    body = client.post(f"{JOBS}/{queued.public_id}/cancel").json()
    assert body["status"] == "cancelled" and body["trained_tokens"] == 0
    running = make_job(org_a.org, status="running")
    body = client.post(f"{JOBS}/{running.public_id}/cancel").json()
    assert body["status"] == "running" and body["cancel_requested"] is True
    running.refresh_from_db()
    assert running.cancel_requested
    done = make_job(org_a.org, status="succeeded")
    assert_error(client.post(f"{JOBS}/{done.public_id}/cancel"), 409, "job_not_cancellable", None)


def test_events_newest_first_and_checkpoints(org_a):
    from longtune.finetuning.events import record_event

    job = make_job(org_a.org)
    for n in range(5):
        record_event(job, f"event {n}", type="metrics" if n % 2 else "message")
    JobCheckpoint.objects.create(
        org=org_a.org, job=job, step=4, metrics={"train_loss": 1.5}, storage_prefix="x/"
    )
    client = org_a.client()
    events = client.get(f"{JOBS}/{job.public_id}/events", {"limit": 3}).json()
    assert [e["message"] for e in events["data"]] == ["event 4", "event 3", "event 2"]
    assert events["data"][1]["type"] == "metrics" and events["data"][1]["level"] == "info"
    older = client.get(f"{JOBS}/{job.public_id}/events", {"after": events["last_id"]}).json()
    assert [e["message"] for e in older["data"]] == ["event 1", "event 0"]
    checkpoints = client.get(f"{JOBS}/{job.public_id}/checkpoints").json()["data"]
    assert checkpoints[0]["step_number"] == 4
    assert checkpoints[0]["metrics"] == {"step": 4, "train_loss": 1.5}
    assert checkpoints[0]["fine_tuned_model_checkpoint"].endswith(":ckpt-step-4")
