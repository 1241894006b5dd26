"""Shared servers with every real part: two orgs' LoRA fine-tunes of one base are served by
ONE worker process holding ONE copy of the base (a solo worker has a single slot, so a
second process could never start), each org reaches only its own model, and stopping one
endpoint leaves the other serving."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from longtune.catalog.models import FineTunedModel
from longtune.inference.models import Endpoint, Replica, SharedServer
from longtune.tenancy.models import OrgQuota
from tests.conftest import api_client
from tests.finetuning.conftest import TINY_ORIGINAL_CONTEXT, wait_for
from tests.finetuning.helpers import make_base_model

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
FAST_REPLICA_ENV = {
    "INFERENCE_HEARTBEAT_SECONDS": "1",
    "INFERENCE_SHARED_IDLE_SECONDS": "2",
    "OMP_NUM_THREADS": "1",
}


def make_lora_model(org, base, storage, seed: int) -> FineTunedModel:
    """A random (non-identity) LoRA adapter of `base`, uploaded like a job's artifact."""
    import torch
    from peft import LoraConfig, get_peft_model

    from gpu_runtime.registry import load_model

    torch.manual_seed(seed)
    model = load_model(base.location)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                      init_lora_weights=False)  # fmt: skip
    peft_model = get_peft_model(model, lora)
    name = f"ft:{base.name}:{org.slug}:shared:{seed}"
    prefix = f"orgs/{org.public_id}/models/{seed}"
    with tempfile.TemporaryDirectory() as tmp:
        peft_model.save_pretrained(tmp)
        storage.upload_dir(Path(tmp), prefix)
    return FineTunedModel.objects.create(
        org=org, name=name, base_model=base, method="lora",
        context_length=TINY_ORIGINAL_CONTEXT, artifact_prefix=prefix,
    )  # fmt: skip


def completion(client, model: str):
    body = {"model": model, "prompt": "the model serve long", "max_tokens": 4, "temperature": 0}
    return client.post("/v1/completions", body, format="json")


def test_two_orgs_lora_endpoints_share_one_server(
    make_org, start_worker, shared_storage, tiny_base_dir
):
    base = make_base_model("tiny-share", tiny_base_dir, original=TINY_ORIGINAL_CONTEXT,
                           maximum=256)  # fmt: skip
    orgs = [make_org("Share A", plan="pro"), make_org("Share B", plan="pro")]
    for handle in orgs:
        OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)
    models = [make_lora_model(h.org, base, shared_storage, seed) for seed, h in enumerate(orgs)]
    clients = [api_client(h.key()) for h in orgs]

    worker = start_worker(queues="inference", **FAST_REPLICA_ENV)  # ONE slot
    urls = []
    for client, model in zip(clients, models, strict=True):
        created = client.post("/v1/endpoints", {"model": model.name}, format="json")
        assert created.status_code == 201, created.content
        urls.append(f"/v1/endpoints/{created.json()['id']}")
    for client, url in zip(clients, urls, strict=True):
        wait_for(lambda c=client, u=url: c.get(u).json()["status"] in ("ready", "failed"),
                 timeout=120, what="the endpoint", worker=worker)  # fmt: skip
        assert client.get(url).json()["status"] == "ready", worker.read_log()[-3000:]

    (server,) = SharedServer.objects.all()
    assert server.status == "ready" and server.base_model == base
    replicas = Replica.objects.unscoped_across_orgs().order_by("pk")
    assert [r.shared_server_id for r in replicas] == [server.pk, server.pk]
    assert {r.pid for r in replicas} == {server.pid}  # one process...
    assert {r.internal_url for r in replicas} == {server.internal_url}  # ...one HTTP server
    assert worker.read_log().count("longtune.inference.serve_shared_base") >= 1
    assert "serve_endpoint[" not in worker.read_log()

    # Each org gets answers from its own adapter, and a 404 for the other org's model.
    answers = []
    for client, model in zip(clients, models, strict=True):
        response = completion(client, model.name)
        assert response.status_code == 200, response.content
        assert response.json()["model"] == model.name
        answers.append(response.json()["choices"][0]["text"])
    for client, other in ((clients[0], models[1]), (clients[1], models[0])):
        response = completion(client, other.name)
        assert (response.status_code, response.json()["error"]["code"]) == (404, "model_not_found")

    # Stop A: its replica finishes, the server (and B) keep serving.
    clients[0].post(f"{urls[0]}/stop")
    wait_for(lambda: clients[0].get(urls[0]).json()["status"] == "stopped", timeout=30,
             what="A to stop", worker=worker)  # fmt: skip
    stopped = completion(clients[0], models[0].name)
    assert (stopped.status_code, stopped.json()["error"]["code"]) == (404, "model_not_deployed")
    again = completion(clients[1], models[1].name)
    assert again.status_code == 200 and again.json()["choices"][0]["text"] == answers[1]
    server.refresh_from_db()
    assert server.status == "ready"

    # Stop B too: with nothing attached the server stops itself and frees the slot...
    clients[1].post(f"{urls[1]}/stop")
    wait_for(lambda: SharedServer.objects.get().status == "stopped", timeout=30,
             what="the idle server to stop", worker=worker)  # fmt: skip
    # ...and a new endpoint restarts it (next generation) on the same worker.
    restarted = clients[0].post(f"{urls[0]}/start").json()
    assert restarted["status"] == "pending"
    wait_for(lambda: clients[0].get(urls[0]).json()["status"] == "ready", timeout=120,
             what="the restarted server", worker=worker)  # fmt: skip
    assert SharedServer.objects.get().generation == 2
    assert completion(clients[0], models[0].name).json()["choices"][0]["text"] == answers[0]
    assert Endpoint.objects.unscoped_across_orgs().filter(hosting="shared_server").count() == 2
