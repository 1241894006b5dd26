"""Shared servers with every real part: two orgs' LoRA fine-tunes of one base are served by
ONE worker process holding ONE copy of the base (a solo worker has a single slot, so a
second process could never start), each org reaches only its own model, and stopping one
endpoint leaves the other serving."""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.db import connection

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


def build_lora(base, seed: int, rank: int = 4, targets=("q_proj", "v_proj")):
    """A random (non-identity) LoRA of `base` as a peft model; the same seed, the same one."""
    import torch
    from peft import LoraConfig, get_peft_model

    from gpu_runtime.registry import load_model

    torch.manual_seed(seed)
    model = load_model(base.location)
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets),
                      init_lora_weights=False)  # fmt: skip
    return get_peft_model(model, lora).eval()


def make_lora_model(org, base, storage, seed: int, **lora) -> FineTunedModel:
    """A random (non-identity) LoRA adapter of `base`, uploaded like a job's artifact."""
    peft_model = build_lora(base, seed, **lora)
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


PROMPT = "the model serve long"


def peft_answer(base, seed: int, max_tokens: int, **lora) -> str:
    """What peft itself answers with that org's adapter alone: greedy ids, detokenized the
    way the engine streams them."""
    import torch

    from gpu_runtime.registry import load_tokenizer
    from gpu_runtime.serving.text_stream import IncrementalDetokenizer

    tokenizer = load_tokenizer(base.location)
    ids = tokenizer(PROMPT).input_ids
    with torch.no_grad():
        out = build_lora(base, seed, **lora).generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False, max_new_tokens=max_tokens, pad_token_id=tokenizer.pad_token_id,
        )[0, len(ids):].tolist()  # fmt: skip
    if tokenizer.eos_token_id in out:  # the engine stops there (and streams no text for it)
        out = out[: out.index(tokenizer.eos_token_id)]
    text = IncrementalDetokenizer(tokenizer, ids)
    return "".join(text.push(t) for t in out) + text.flush()


def test_orgs_served_concurrently_each_get_their_own_adapters_answer(
    make_org, start_worker, shared_storage, tiny_base_dir
):
    """Three orgs' LoRA fine-tunes (different ranks and target modules) on one shared server;
    every org fires its requests at the same time through the gateway, so the server's batches
    mix the adapters (gathered LoRA): each answer is the one peft gives with that org's
    adapter alone, and the answers differ between orgs."""
    base = make_base_model("tiny-mix", tiny_base_dir, original=TINY_ORIGINAL_CONTEXT,
                           maximum=256)  # fmt: skip
    loras = [
        {"rank": 4, "targets": ("q_proj", "v_proj")},
        {"rank": 8, "targets": ("q_proj", "k_proj", "v_proj", "o_proj")},
        {"rank": 2, "targets": ("gate_proj", "up_proj", "down_proj")},
    ]
    seeds = [21, 22, 23]
    orgs = [make_org(f"Mix {i}", plan="pro") for i in range(len(seeds))]
    for handle in orgs:
        OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)
    models = [
        make_lora_model(h.org, base, shared_storage, seed, **lora)
        for h, seed, lora in zip(orgs, seeds, loras, strict=True)
    ]
    clients = [api_client(h.key()) for h in orgs]
    worker = start_worker(queues="inference", **FAST_REPLICA_ENV)
    urls = []
    for client, model in zip(clients, models, strict=True):
        created = client.post("/v1/endpoints", {"model": model.name}, format="json")
        assert created.status_code == 201, created.content
        urls.append(f"/v1/endpoints/{created.json()['id']}")
    for client, url in zip(clients, urls, strict=True):
        wait_for(lambda c=client, u=url: c.get(u).json()["status"] in ("ready", "failed"),
                 timeout=180, what="the endpoint", worker=worker)  # fmt: skip
        assert client.get(url).json()["status"] == "ready", worker.read_log()[-3000:]
    assert SharedServer.objects.count() == 1

    max_tokens, per_org = 6, 3

    def ask(org_index: int) -> tuple[int, int, str]:
        try:
            body = {"model": models[org_index].name, "prompt": PROMPT,
                    "max_tokens": max_tokens, "temperature": 0}  # fmt: skip
            response = clients[org_index].post("/v1/completions", body, format="json")
            text = response.json()["choices"][0]["text"] if response.status_code == 200 else ""
            return org_index, response.status_code, text
        finally:
            connection.close()  # this thread's own database connection

    jobs = [i for _ in range(per_org) for i in range(len(orgs))]
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(ask, jobs))
    expected = [
        peft_answer(base, seed, max_tokens, **lora) for seed, lora in zip(seeds, loras, strict=True)
    ]
    assert len(set(expected)) == len(expected)  # the adapters really answer differently
    for org_index, status, text in answers:
        assert status == 200, (org_index, status)
        assert text == expected[org_index], (org_index, text, expected[org_index])
