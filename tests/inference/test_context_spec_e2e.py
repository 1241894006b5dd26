"""One context spec end to end: the spec a job plans and stores is the one in the saved model's
config.json, and the one serving enforces — exactly, not the base model's context nor a DB copy.

A real `cpu,gpu` worker trains the tiny Llama (original context 64) at 2× with linear RoPE; the
gateway then talks to a REAL replica (the worker's HTTP server around an InferenceEngine, in
this process) serving the trained adapter.
"""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from gpu_runtime.contract import CONTEXT_LENGTH_EXCEEDED, ContextSpec
from longtune.catalog.models import FineTunedModel
from longtune.finetuning.models import FineTuningJob
from longtune.inference.models import Endpoint
from longtune.tenancy.models import OrgQuota
from tests.conftest import api_client
from tests.finetuning.conftest import FAST_WORKER_ENV, TINY_ORIGINAL_CONTEXT, wait_for
from tests.finetuning.helpers import chat_examples, make_base_model, make_file
from tests.inference.helpers import local_replica
from tests.inference.test_serving_e2e import prompt_of_tokens

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
TARGET = 2 * TINY_ORIGINAL_CONTEXT


def test_planned_spec_is_saved_and_enforced_unchanged(
    make_org, start_worker, shared_storage, tiny_base_dir
):
    handle = make_org("Context Spec", plan="pro")
    OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)
    make_base_model("tiny-ctx", tiny_base_dir, original=TINY_ORIGINAL_CONTEXT, maximum=1024)
    worker = start_worker(queues="cpu,gpu", **FAST_WORKER_ENV)
    owner = api_client(handle.key())
    file = make_file(handle.org, chat_examples(6))
    created = owner.post(
        "/v1/fine_tuning/jobs",
        {"model": "tiny-ctx", "training_file": file.public_id, "suffix": "ctx", "seed": 1,
         "rope_scaling": {"type": "linear", "factor": 2},
         "hyperparameters": {"n_epochs": 1, "batch_size": 1}, "lora": {"r": 4, "alpha": 8}},
        format="json",
    )  # fmt: skip
    assert created.status_code == 201, created.content
    assert created.json()["context_length"] == TARGET
    assert created.json()["rope_scaling"] == {"type": "linear", "factor": 2.0}

    # Planned once, stored once.
    row = FineTuningJob.objects.for_org(handle.org).get(public_id=created.json()["id"])
    planned = ContextSpec.plan(
        original_length=TINY_ORIGINAL_CONTEXT, target_length=TARGET, rope_method="linear"
    )
    assert row.context == planned.to_dict()

    job_url = f"/v1/fine_tuning/jobs/{row.public_id}"
    job = wait_for(
        lambda: (j := owner.get(job_url).json())["status"] in ("succeeded", "failed") and j,
        timeout=240,
        what="the fine-tuning job",
        worker=worker,
    )
    assert job["status"] == "succeeded", (job["error"], worker.read_log()[-3000:])

    # ...carried unchanged into the saved model config.
    model = FineTunedModel.objects.for_org(handle.org).get(name=job["fine_tuned_model"])
    saved = json.loads(shared_storage.open(model.artifact_prefix + "config.json").read())
    assert saved[ContextSpec.CONFIG_KEY] == row.context
    assert saved["rope_parameters"]["factor"] == row.context["rope_factor"]

    # ...and read back by serving: the limit is exactly the spec's target length.
    endpoint_id = owner.post("/v1/endpoints", {"model": model.name}, format="json").json()["id"]
    endpoint = Endpoint.objects.for_org(handle.org).get(public_id=endpoint_id)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_dir)
    prompt, count = prompt_of_tokens(tokenizer, TINY_ORIGINAL_CONTEXT + 4, TARGET - 8)
    client = api_client(handle.key("member", scopes=["inference"]))
    with local_replica(endpoint, tiny_base_dir):
        body = {"model": model.name, "prompt": prompt, "temperature": 0}
        fits = client.post("/v1/completions", {**body, "max_tokens": TARGET - count}, format="json")
        assert fits.status_code == 200, fits.content
        assert fits.json()["usage"]["prompt_tokens"] == count > TINY_ORIGINAL_CONTEXT
        over = client.post(
            "/v1/completions", {**body, "max_tokens": TARGET - count + 1}, format="json"
        )
    assert over.status_code == 400, over.content
    error = over.json()["error"]
    assert (error["code"], error["param"]) == (CONTEXT_LENGTH_EXCEEDED, "max_tokens")
    assert f"maximum context length is {TARGET} tokens" in error["message"]
