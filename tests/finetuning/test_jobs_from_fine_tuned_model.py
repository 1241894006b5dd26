"""POST /v1/fine_tuning/jobs whose ``model`` is one of the org's fine-tuned models or per-epoch
checkpoints: same base, the parent's method, LoRA shape and RoPE method inherited, conflicts a
coded 400 naming the field, another org's or a deleted model a 404 like a missing one, and the
job and the model it makes naming both their base and their parent. (No worker here; the
real-worker run is tests/finetuning/test_continue_from_checkpoint_e2e.py.)"""

from __future__ import annotations

import pytest
from django.utils import timezone

from gpu_runtime import memory_planner as mp
from longtune.catalog import services as catalog
from longtune.finetuning.models import FineTuningJob
from longtune.finetuning.planning import train_config_for
from longtune.tenancy.models import OrgQuota
from tests.finetuning.helpers import (
    PARENT_LORA,
    make_base_model,
    make_file,
    make_job,
    make_parent_model,
)

pytestmark = pytest.mark.django_db
JOBS = "/v1/fine_tuning/jobs"
TINY = mp.ModelShape(layers=2, hidden=64, intermediate=128, heads=4, kv_heads=2, vocab=300)


def tiny_base():
    return make_base_model(original=64, maximum=1024, architecture=TINY.to_dict())


@pytest.fixture
def base(db):
    return tiny_base()


def parent_of(org, **fields):
    return make_parent_model(org, base=tiny_base(), **fields)


def create(handle, model, **extra):
    file = make_file(handle.org, num_tokens=1000)
    body = {"model": model, "training_file": file.public_id, **extra}
    return handle.client().post(JOBS, body, format="json")


def assert_error(response, status, code, param):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error


def test_a_job_from_a_final_lora_model_continues_its_adapter_at_its_context(org_a, base):
    parent = parent_of(org_a.org)
    response = create(org_a, parent.name, lora={"dropout": 0.1})
    assert response.status_code == 201, response.content
    job = response.json()
    assert job["model"] == parent.name  # OpenAI's job `model`: the name the client gave
    assert job["parent_model"] == parent.name and job["base_model"] == base.name
    # the adapter's shape is the parent's; dropout (a training-time choice) may change
    assert job["lora"] == {**PARENT_LORA, "dropout": 0.1} and job["full"] is False
    assert job["context_length"] == 256
    assert job["rope_scaling"] == {"type": "yarn", "factor": 4.0}
    assert job["memory_plan"]["fits"] is True  # planned like any job on this base
    row = FineTuningJob.objects.for_org(org_a.org).get(public_id=job["id"])
    assert row.parent_model == parent and row.base_model == base
    # The engine gets the parent's artifact as TrainConfig.parent_model; one without is refused.
    config = train_config_for(row, output_dir="o", checkpoint_every_steps=1, parent_model="p")
    assert config.parent_model == "p" and config.base_model == base.location
    assert (config.lora_r, config.lora_alpha) == (4, 8.0)
    with pytest.raises(ValueError, match="^parent_model:"):
        train_config_for(row, output_dir="o", checkpoint_every_steps=1)
    listed = org_a.client().get(f"{JOBS}/{job['id']}").json()
    assert listed["parent_model"] == parent.name


def test_a_job_from_a_checkpoint_by_its_fine_tuned_model_checkpoint_name(org_a, base):
    checkpoint = parent_of(org_a.org, checkpoint_step=3)
    assert checkpoint.name.endswith(":ckpt-step-3")
    response = create(org_a, checkpoint.name)
    assert response.status_code == 201, response.content
    assert response.json()["parent_model"] == checkpoint.name
    assert response.json()["model"] == checkpoint.name
    assert response.json()["lora"] == PARENT_LORA


def test_the_model_it_makes_records_its_base_and_its_parent(org_a, base):
    checkpoint = parent_of(org_a.org, checkpoint_step=2)
    job_id = create(org_a, checkpoint.name, suffix="gen2").json()["id"]
    job = FineTuningJob.objects.for_org(org_a.org).get(public_id=job_id)
    published = catalog.publish_fine_tuned_model(
        job,
        location=catalog.new_artifact_location(org_a.org.public_id),
        artifact_bytes=10,
        metrics_csv=b"step,loss\n1,1.0\n",
    )
    # named after the base (OpenAI's shape), not a growing chain of ft: names
    assert published.model.name == f"ft:{base.name}:{org_a.org.slug}:gen2:{job_id}"
    assert published.model.parent_model == checkpoint
    epoch = catalog.publish_checkpoint_model(
        job, step=1, location=catalog.new_artifact_location(org_a.org.public_id), artifact_bytes=1
    )
    assert epoch.parent_model == checkpoint
    shown = org_a.client().get(f"/v1/models/{published.model.name}").json()
    assert (shown["root"], shown["parent_model"]) == (base.name, checkpoint.name)
    listed = {m["id"]: m for m in org_a.client().get("/v1/models").json()["data"]}
    assert listed[published.model.name]["parent_model"] == checkpoint.name
    assert listed[checkpoint.name]["parent_model"] is None


def test_another_orgs_model_or_checkpoint_is_a_404_exactly_like_a_missing_one(org_a, org_b, base):
    theirs = [parent_of(org_b.org), parent_of(org_b.org, checkpoint_step=2)]
    missing = create(org_a, "ft:tiny-test:nobody::ftjob-missing")
    assert_error(missing, 404, "model_not_found", "model")
    for model in theirs:
        response = create(org_a, model.name)
        assert_error(response, 404, "model_not_found", "model")
        assert set(response.json()["error"]) == set(missing.json()["error"])
    assert not FineTuningJob.objects.for_org(org_a.org).filter(parent_model__isnull=False)
    assert create(org_b, theirs[1].name).status_code == 201  # its own org may


def test_a_deleted_model_is_a_404(org_a, base):
    parent = parent_of(org_a.org)
    assert org_a.client().delete(f"/v1/models/{parent.name}").status_code == 200
    assert_error(create(org_a, parent.name), 404, "model_not_found", "model")


def test_a_parent_trained_with_a_length_dependent_rope_method_cannot_be_continued(org_a, base):
    """A model trained with dynamic NTK before jobs refused it: a job inheriting its method is
    refused on `model`, and its base can still be fine-tuned with a servable method."""
    parent = parent_of(org_a.org, rope_method="dynamic")
    response = create(org_a, parent.name)
    assert_error(response, 400, "rope_method_not_servable", "model")
    assert "'dynamic'" in response.json()["error"]["message"]
    assert not FineTuningJob.objects.for_org(org_a.org).filter(parent_model=parent).exists()
    again = create(org_a, base.name, context_length=256, rope_scaling={"type": "ntk"})
    assert again.status_code == 201, again.content


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"lora": {"r": 8}}, "lora.r"),
        ({"lora": {"alpha": 16}}, "lora.alpha"),
        ({"lora": {"target_modules": ["q_proj"]}}, "lora.target_modules"),
        ({"full": True}, "full"),
        ({"rope_scaling": {"type": "linear"}}, "rope_scaling.type"),
    ],
)
def test_a_request_conflicting_with_the_parent_is_a_coded_400_naming_the_field(
    org_a, base, extra, param
):
    parent = parent_of(org_a.org)
    response = create(org_a, parent.name, **extra)
    assert_error(response, 400, "parent_model_conflict", param)
    assert param.split(".")[0] in response.json()["error"]["message"]
    assert not FineTuningJob.objects.for_org(org_a.org).filter(parent_model=parent).exists()


def test_the_same_lora_settings_as_the_parent_are_accepted(org_a, base):
    parent = parent_of(org_a.org)
    same = {"r": 4, "alpha": 8, "target_modules": ["all-linear"]}
    assert create(org_a, parent.name, lora=same).status_code == 201


def test_a_full_fine_tune_continues_full_and_refuses_lora_settings(org_a, base):
    parent = parent_of(org_a.org, method="full")
    response = create(org_a, parent.name)
    assert response.status_code == 201, response.content
    assert response.json()["full"] is True and response.json()["lora"] is None
    assert_error(create(org_a, parent.name, lora={"r": 4}), 400, "parent_model_conflict", "lora")


def test_a_longer_context_extends_from_the_original_and_a_shorter_one_is_refused(org_a, base):
    parent = parent_of(org_a.org, target=256)  # yarn x4 of the base's 64
    OrgQuota.objects.create(org=org_a.org, max_concurrent_jobs=10)
    longer = create(org_a, parent.name, context_length=512)
    assert longer.status_code == 201, longer.content
    assert longer.json()["rope_scaling"] == {"type": "yarn", "factor": 8.0}  # 512/64, not 4x2
    by_factor = create(org_a, parent.name, rope_scaling={"factor": 8})
    assert by_factor.status_code == 201, by_factor.content
    assert by_factor.json()["context_length"] == 512
    assert_error(
        create(org_a, parent.name, context_length=128), 400, "context_length_too_small",
        "context_length",
    )  # fmt: skip
    assert_error(
        create(org_a, parent.name, context_length=2048), 400, "context_length_too_large",
        "context_length",
    )  # fmt: skip


def test_an_unscaled_parent_takes_the_requested_method_like_a_base(org_a, base):
    parent = parent_of(org_a.org, target=64, rope_method="yarn")  # factor 1: no scaling
    response = create(org_a, parent.name, context_length=256, rope_scaling={"type": "linear"})
    assert response.status_code == 201, response.content
    assert response.json()["rope_scaling"] == {"type": "linear", "factor": 4.0}


def test_quotas_apply_as_for_a_base_model(org_a, base):
    parent = parent_of(org_a.org)
    OrgQuota.objects.create(org=org_a.org, monthly_training_tokens=500)
    assert_error(create(org_a, parent.name), 429, "quota_exceeded", "monthly_training_tokens")


def test_the_parent_cannot_be_deleted_while_a_job_starts_from_it(org_a, base):
    parent = parent_of(org_a.org, checkpoint_step=2)
    job_id = create(org_a, parent.name).json()["id"]
    refused = org_a.client().delete(f"/v1/models/{parent.name}")
    assert_error(refused, 409, "model_in_use", "model")
    assert job_id in refused.json()["error"]["message"]
    FineTuningJob.objects.for_org(org_a.org).filter(public_id=job_id).update(status="succeeded")
    assert org_a.client().delete(f"/v1/models/{parent.name}").status_code == 200


def test_the_worker_downloads_the_parent_artifact_and_refuses_a_deleted_one(org_a, base, tmp_path):
    from longtune.storage import get_storage
    from workers.finetuning import TrainingInputError, fetch_parent_model

    parent = parent_of(org_a.org, checkpoint_step=2)
    storage = get_storage()
    storage.put_bytes(f"{parent.artifact_prefix}config.json", b"{}")
    storage.put_bytes(f"{parent.artifact_prefix}adapter_model.safetensors", b"weights")
    job_id = create(org_a, parent.name).json()["id"]
    job = FineTuningJob.objects.for_org(org_a.org).get(public_id=job_id)
    local = fetch_parent_model(job, tmp_path, storage)
    assert (local / "adapter_model.safetensors").read_bytes() == b"weights"
    assert fetch_parent_model(job, tmp_path, storage) == local  # a resumed attempt reuses it
    assert fetch_parent_model(make_job(org_a.org), tmp_path / "none", storage) is None
    parent.deleted_at = timezone.now()
    parent.save(update_fields=["deleted_at"])
    job.refresh_from_db()
    with pytest.raises(TrainingInputError, match="was deleted"):
        fetch_parent_model(job, tmp_path / "again", storage)
    empty = parent_of(org_a.org)  # its artifact never uploaded
    job.parent_model = empty
    with pytest.raises(TrainingInputError, match="is missing"):
        fetch_parent_model(job, tmp_path / "empty", storage)
