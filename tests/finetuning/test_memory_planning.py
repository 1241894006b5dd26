"""Memory planning at job creation (finetuning/planning.plan_memory): a job that fits no layout
on the capacity its queue routes to is refused with a coded 400 that says what would fit; a
job that fits stores the chosen plan, returns it, tells it in the creation event, and
train_config_for applies its memory knobs."""

from __future__ import annotations

import datetime

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from gpu_runtime import memory_planner as mp
from longtune.compute.models import DedicatedCapacity
from longtune.finetuning.models import FineTuningJob
from longtune.finetuning.planning import (
    INSUFFICIENT_ACCELERATOR_MEMORY,
    train_config_for,
    training_capacity_for,
)
from longtune.provisioning.models import DedicatedInstance
from tests.dashboard.conftest import session_client
from tests.finetuning.helpers import make_base_model, make_file

pytestmark = pytest.mark.django_db
JOBS = "/v1/fine_tuning/jobs"
TINY = mp.ModelShape(layers=2, hidden=64, intermediate=128, heads=4, kv_heads=2, vocab=300)


@pytest.fixture
def tiny(db):
    return make_base_model("tiny-plan", original=64, maximum=1024, architecture=TINY.to_dict())


@pytest.fixture
def llama8b(db):
    return make_base_model(
        "llama-3-8b", original=8192, maximum=1 << 20, architecture=mp.LLAMA3_8B.to_dict()
    )


def create(handle, model, **fields):
    file = make_file(handle.org, num_tokens=1000)
    body = {"model": model.name, "training_file": file.public_id, **fields}
    return handle.client().post(JOBS, body, format="json")


def creation_event(handle, job_id):
    events = handle.client().get(f"{JOBS}/{job_id}/events").json()["data"]
    return next(e for e in events if e["message"].startswith("Created fine-tuning job"))


def dedicated_instance(org, accelerator_type, per_replica):
    capacity = DedicatedCapacity.objects.create(
        org=org, hosts="training", queue=f"gpu.{org.slug}.mem", active=True
    )
    return DedicatedInstance.objects.create(
        org=org,
        capacity=capacity,
        accelerator_type=accelerator_type,
        accelerators_per_replica=per_replica,
        pool="test",
        contract_start=datetime.date(2026, 12, 1),
        contract_end=datetime.date(2027, 12, 1),
        state="ready",
    )


def test_a_job_that_fits_is_planned_stored_returned_and_told(org_a, tiny):
    response = create(org_a, tiny, context_length=256)
    assert response.status_code == 201, response.content
    plan = response.json()["memory_plan"]
    assert plan["accelerator"] == "cpu" and plan["fits"] is True
    assert plan["layout"]["sequence_parallel"] == 1 and plan["layout"]["fsdp"] == 1
    # 256 tokens of a 2-layer model: the cheapest layout needs no memory-saving knob
    assert plan["layout"]["activation_checkpointing"] is False
    assert plan["estimate"]["peak_bytes"] == sum(plan["estimate"]["breakdown"].values())
    job = FineTuningJob.objects.for_org(org_a.org).get(public_id=response.json()["id"])
    assert job.memory_plan == plan
    event = creation_event(org_a, job.public_id)
    assert "Memory plan on the shared pool: 1x cpu" in event["message"]
    assert event["data"] == {"memory_plan": plan}
    config = train_config_for(job, output_dir="x", checkpoint_every_steps=1)
    assert config.activation_checkpointing is False and config.mlp_chunk_size == 0
    assert config.loss_chunk_size == plan["layout"]["loss_chunk_size"]


def test_a_job_that_fits_no_layout_is_refused_saying_what_would_fit(org_a, llama8b):
    """8B LoRA at 150K on the default shared pool (one CPU worker with 8 GiB): the frozen
    base alone is 32 GB in fp32."""
    response = create(org_a, llama8b, context_length=150_000)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (INSUFFICIENT_ACCELERATOR_MEMORY, "context_length")
    message = error["message"]
    assert "does not fit the shared pool (1x cpu, 8 GiB each)" in message
    assert "GiB more than the 8.0 GiB usable" in message
    assert "Not even the weights and optimizer state fit there" in message
    setup = mp.TrainingSetup(context_length=150_000, lora_dropout=0.05)
    elsewhere = mp.smallest_fitting_capacity(mp.LLAMA3_8B, setup)
    assert f"It would fit 1x {elsewhere.accelerator}" in message
    assert not FineTuningJob.objects.for_org(org_a.org).exists()


def test_the_refusal_names_the_longest_context_that_fits(org_a, llama8b, settings):
    settings.FINETUNE_SHARED_ACCELERATOR = "h100_80gb"
    response = create(org_a, llama8b, context_length=1_000_000)
    assert response.status_code == 400, response.content
    message = response.json()["error"]["message"]
    setup = mp.TrainingSetup(context_length=1_000_000, lora_dropout=0.05)
    longest = mp.max_context_that_fits(mp.LLAMA3_8B, setup, mp.ACCELERATORS["h100_80gb"])
    assert 150_000 < longest < 1_000_000
    assert f"The longest context that fits there is {longest} tokens" in message
    # what would fit elsewhere, as the planner prices it (with the per-layer inventory of
    # 2026-12-02 that is one B200 with checkpoint offload; it was sequence parallel before)
    elsewhere = mp.smallest_fitting_capacity(mp.LLAMA3_8B, setup)
    assert elsewhere is not None and elsewhere.fits
    assert f"fit {elsewhere.layout.world_size}x {elsewhere.accelerator}" in message
    assert elsewhere.layout.describe() in message


def test_gpu_pool_plans_checkpointing_for_8b_lora_at_150k(org_a, llama8b, settings):
    settings.FINETUNE_SHARED_ACCELERATOR = "h100_80gb"
    response = create(org_a, llama8b, context_length=150_000)
    assert response.status_code == 201, response.content
    plan = response.json()["memory_plan"]
    assert (plan["accelerator"], plan["layout"]["data_parallel"]) == ("h100_80gb", 1)
    assert plan["layout"]["activation_checkpointing"] is True
    assert plan["estimate"]["peak_bytes"] <= plan["usable_bytes"]
    job = FineTuningJob.objects.for_org(org_a.org).get(public_id=response.json()["id"])
    config = train_config_for(job, output_dir="x", checkpoint_every_steps=1)
    assert config.activation_checkpointing is True
    assert config.offload_activations is plan["layout"]["offload_activations"]
    # full fine-tuning: 16 B/param of an 8B model is more than one 80 GB GPU holds
    full = create(org_a, llama8b, context_length=150_000, full=True)
    assert full.status_code == 400
    assert full.json()["error"]["code"] == INSUFFICIENT_ACCELERATOR_MEMORY


def test_dedicated_instances_are_planned_on_their_own_accelerators(org_a, org_b, llama8b):
    instance = dedicated_instance(org_a.org, "h200_141gb", 4)
    capacity = training_capacity_for(org_a.org, instance.capacity.queue)
    assert (capacity.accelerator, capacity.devices) == ("h200_141gb", 4)
    response = create(org_a, llama8b, context_length=1_000_000)
    assert response.status_code == 201, response.content
    plan = response.json()["memory_plan"]
    assert (plan["accelerator"], plan["devices"]) == ("h200_141gb", 4)
    assert plan["layout"]["sequence_parallel"] > 1  # 1M tokens: more than one GPU's worth
    event = creation_event(org_a, response.json()["id"])
    assert f"Memory plan on dedicated instance {instance.public_id}" in event["message"]
    # another org keeps the shared pool (a CPU worker): the same job is refused there
    refused = create(org_b, llama8b, context_length=1_000_000)
    assert refused.status_code == 400
    assert "the shared pool" in refused.json()["error"]["message"]


def test_a_model_without_architecture_is_created_unplanned_saying_why(org_a, db):
    blank = make_base_model("no-arch", original=64, maximum=1024)
    response = create(org_a, blank, context_length=128)
    assert response.status_code == 201, response.content
    assert response.json()["memory_plan"] is None
    message = creation_event(org_a, response.json()["id"])["message"]
    assert "Memory not planned: base model no-arch has no recorded architecture." in message


def test_an_accelerator_outside_the_catalogue_is_created_unplanned_saying_why(org_a, tiny):
    dedicated_instance(org_a.org, "l4_24gb", 1)  # a type the planner's catalogue lacks
    response = create(org_a, tiny, context_length=128)
    assert response.status_code == 201, response.content
    assert response.json()["memory_plan"] is None
    message = creation_event(org_a, response.json()["id"])["message"]
    assert "Memory not planned: unknown accelerator 'l4_24gb'" in message


def test_staff_cannot_save_a_malformed_architecture(db):
    model = make_base_model("bad-arch", architecture={"layers": 2, "hidden": 64})
    with pytest.raises(ValidationError) as error:
        model.full_clean()
    assert "architecture" in error.value.message_dict
    model.architecture = {**TINY.to_dict(), "layerz": 1}
    with pytest.raises(ValidationError, match="unknown ModelShape field"):
        model.full_clean()


def test_the_dashboard_job_page_shows_the_plan(org_a, tiny):
    job_id = create(org_a, tiny, context_length=256).json()["id"]
    job = FineTuningJob.objects.for_org(org_a.org).get(public_id=job_id)
    page = session_client(org_a.owner).get(reverse("dashboard:job", args=[org_a.org.slug, job_id]))
    assert page.status_code == 200
    assert f"<dt>Memory plan</dt><dd>{job.memory_plan['summary']}</dd>" in page.content.decode()
