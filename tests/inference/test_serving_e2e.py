"""Serving with every real part: a model fine-tuned by the jobs flow (real `cpu,gpu` worker,
tiny Llama at 4× its original context with YaRN) is deployed through POST /v1/endpoints; a
real worker on the `inference` queue starts the replica; the official `openai` client (live
server) calls it, streaming and not; usage rows match; another org gets 404; stop works.
"""

from __future__ import annotations

import openai
import pytest
from transformers import AutoTokenizer

from longtune.inference.models import Endpoint, Replica, UsageRecord
from longtune.tenancy.models import OrgQuota
from tests.conftest import api_client, openai_client
from tests.finetuning.conftest import FAST_WORKER_ENV, TINY_ORIGINAL_CONTEXT, wait_for
from tests.finetuning.helpers import chat_examples, make_base_model, make_file
from tests.fixtures.services import asgi_server

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
FAST_REPLICA_ENV = {"INFERENCE_HEARTBEAT_SECONDS": "1", "OMP_NUM_THREADS": "1"}
EXTENDED_CONTEXT = 256  # 4× the tiny base's original 64


def train_fine_tuned_model(handle, worker) -> str:
    """The real jobs flow: POST /v1/fine_tuning/jobs -> the worker trains -> ft: model name."""
    file = make_file(handle.org, chat_examples(12))
    client = api_client(handle.key())
    created = client.post(
        "/v1/fine_tuning/jobs",
        {"model": "tiny-serve", "training_file": file.public_id, "suffix": "srv", "seed": 2,
         "context_length": EXTENDED_CONTEXT, "rope_scaling": {"type": "yarn"},
         "hyperparameters": {"n_epochs": 1, "batch_size": 1}, "lora": {"r": 4, "alpha": 8}},
        format="json",
    )  # fmt: skip
    assert created.status_code == 201, created.content
    job_url = f"/v1/fine_tuning/jobs/{created.json()['id']}"
    job = wait_for(
        lambda: (j := client.get(job_url).json())["status"] in ("succeeded", "failed") and j,
        timeout=240,
        what="the fine-tuning job",
        worker=worker,
    )
    assert job["status"] == "succeeded", (job["error"], worker.read_log()[-3000:])
    return job["fine_tuned_model"]


def prompt_of_tokens(tokenizer, low: int, high: int) -> tuple[str, int]:
    """A completion prompt whose token count lies in (low, high)."""
    words = "the model serve long context data answer question ".split()
    text = ""
    for index in range(10_000):
        text += words[index % len(words)] + " "
        count = len(tokenizer(text).input_ids)
        if count > low:
            assert count < high, count
            return text, count
    raise AssertionError("could not build the prompt")


def test_fine_tuned_model_served_through_openai_client(
    live_server, make_org, start_worker, shared_storage, tiny_base_dir, worker_env
):
    handle = make_org("Serve E2E", plan="pro")
    OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)
    make_base_model("tiny-serve", tiny_base_dir, original=TINY_ORIGINAL_CONTEXT, maximum=1024)
    trainer = start_worker(queues="cpu,gpu", **FAST_WORKER_ENV)
    model_name = train_fine_tuned_model(handle, trainer)
    assert model_name.startswith(f"ft:tiny-serve:{handle.org.slug}:srv:")

    # Deploy: a real worker on the `inference` queue runs the replica.
    replica_worker = start_worker(queues="inference", **FAST_REPLICA_ENV)
    owner = api_client(handle.key())
    created = owner.post("/v1/endpoints", {"model": model_name}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["context_length"] == EXTENDED_CONTEXT
    url = f"/v1/endpoints/{created.json()['id']}"
    wait_for(
        lambda: owner.get(url).json()["status"] in ("ready", "failed"),
        timeout=120,
        what="the endpoint to be ready",
        worker=replica_worker,
    )
    assert owner.get(url).json()["status"] == "ready", replica_worker.read_log()[-3000:]
    replica = Replica.objects.unscoped_across_orgs().get(endpoint__public_id=created.json()["id"])
    assert replica.internal_url.startswith("http://127.0.0.1:") and replica.pid

    client = openai_client(handle.key("member", scopes=["inference"]), live_server)
    messages = [{"role": "user", "content": "hello there number 3 how are you today"}]

    # Non-streaming chat (chat template of the fine-tuned tokenizer, adapter on the base).
    reply = client.chat.completions.create(
        model=model_name, messages=messages, max_tokens=8, temperature=0
    )
    assert reply.object == "chat.completion" and reply.model == model_name
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens >= 1 and reply.usage.prompt_tokens > 5
    row = UsageRecord.objects.for_org(handle.org).get(request_id=reply.id)
    assert (row.prompt_tokens, row.completion_tokens, row.model) == (
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
        model_name,
    )

    # Streaming chat: same greedy text, usage chunk equal to the ledger row.
    stream = client.chat.completions.create(
        model=model_name, messages=messages, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    usage = chunks[-1].usage
    streamed_row = UsageRecord.objects.for_org(handle.org).get(request_id=chunks[0].id)
    assert streamed_row.stream
    assert (streamed_row.prompt_tokens, streamed_row.completion_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )

    # The same stream through uvicorn (ASGI): the SSE body is an async iterator there.
    with asgi_server(worker_env) as asgi_url:
        asgi_client = client.with_options(base_url=f"{asgi_url}/v1")
        asgi_chunks = list(
            asgi_client.chat.completions.create(
                model=model_name, messages=messages, max_tokens=8, temperature=0, stream=True
            )
        )
    asgi_text = "".join(c.choices[0].delta.content or "" for c in asgi_chunks if c.choices)
    assert asgi_text == text and asgi_chunks[-1].choices[0].finish_reason in ("stop", "length")

    # A prompt 3× the base's original context, inside the extended one, is served.
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_dir)
    long_prompt, count = prompt_of_tokens(
        tokenizer, 3 * TINY_ORIGINAL_CONTEXT, EXTENDED_CONTEXT - 16
    )
    long = client.completions.create(model=model_name, prompt=long_prompt, max_tokens=8)
    assert long.usage.prompt_tokens == count > 3 * TINY_ORIGINAL_CONTEXT
    assert long.choices[0].finish_reason in ("stop", "length")
    # ...and one longer than the extended context is a coded 400, not a 500.
    with pytest.raises(openai.BadRequestError) as too_long:
        client.completions.create(model=model_name, prompt=long_prompt * 2, max_tokens=8)
    assert too_long.value.code == "context_length_exceeded"

    # Another org's key: the model does not exist for it.
    other = make_org("Serve Other")
    stranger = openai_client(other.key("member", scopes=["inference"]), live_server, timeout=30)
    with pytest.raises(openai.NotFoundError) as not_found:
        stranger.chat.completions.create(model=model_name, messages=messages, max_tokens=2)
    assert not_found.value.code == "model_not_found"

    # Every metered request is in the ledger; the endpoint page shows TTFT and tokens/s.
    assert UsageRecord.objects.for_org(handle.org).count() == 4
    assert not UsageRecord.objects.for_org(other.org).exists()
    stats = owner.get(url).json()["stats"]
    assert stats["requests"] == 4 and stats["avg_ttft_ms"] > 0
    assert stats["avg_tokens_per_second"] > 0

    # Stop: the replica sees the flag, releases its worker slot, the endpoint is stopped.
    assert owner.post(f"{url}/stop").json()["stop_requested"] is True
    wait_for(
        lambda: owner.get(url).json()["status"] == "stopped",
        timeout=60,
        what="the endpoint to stop",
        worker=replica_worker,
    )
    events = [e["message"] for e in owner.get(f"{url}/events?limit=100").json()["data"]]
    assert "Endpoint ready." in events and "Endpoint stopped." in events
    replica.refresh_from_db()
    assert replica.status == "stopped"
    with pytest.raises(openai.NotFoundError) as gone:
        client.chat.completions.create(model=model_name, messages=messages, max_tokens=2)
    assert gone.value.code == "model_not_deployed"
    endpoint = Endpoint.objects.for_org(handle.org).get()
    assert endpoint.ready_at and endpoint.stopped_at


def test_replica_lost_with_its_worker_is_restarted_by_the_watchdog(
    make_org, start_worker, shared_storage, tiny_base_dir, settings
):
    """SIGKILL the worker holding the replica: the watchdog starts a new generation, which a
    fresh worker serves."""
    from longtune.inference.services import recover_lost_replicas

    settings.INFERENCE_STALE_AFTER_SECONDS = 3
    handle = make_org("Serve Crash", plan="pro")
    OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)
    make_base_model("tiny-crash", tiny_base_dir, original=TINY_ORIGINAL_CONTEXT, maximum=256)
    owner = api_client(handle.key())
    first = start_worker(queues="inference", **FAST_REPLICA_ENV)
    created = owner.post("/v1/endpoints", {"model": "tiny-crash"}, format="json").json()
    url = f"/v1/endpoints/{created['id']}"
    wait_for(lambda: owner.get(url).json()["status"] == "ready", timeout=90,
             what="the first replica", worker=first)  # fmt: skip
    first.kill()

    body = {"model": "tiny-crash", "prompt": "the model", "max_tokens": 3}
    dead = owner.post("/v1/completions", body, format="json")
    # Refused connection, or (on a slow machine) the heartbeat already counts as stale.
    assert dead.status_code == 503
    assert dead.json()["error"]["code"] in ("replica_unavailable", "endpoint_not_ready")

    second = start_worker(queues="inference", **FAST_REPLICA_ENV)
    assert wait_for(recover_lost_replicas, timeout=30, what="the watchdog") == [created["id"]]
    wait_for(lambda: owner.get(url).json()["status"] == "ready", timeout=90,
             what="the replacement replica", worker=second)  # fmt: skip
    served = owner.post("/v1/completions", body, format="json")
    assert served.status_code == 200, served.content
    assert served.json()["usage"]["completion_tokens"] >= 1
    replicas = Replica.objects.unscoped_across_orgs().filter(endpoint__public_id=created["id"])
    assert sorted(replicas.values_list("generation", "status")) == [(1, "failed"), (2, "ready")]
    owner.post(f"{url}/stop")
    wait_for(lambda: owner.get(url).json()["status"] == "stopped", timeout=30,
             what="the stop", worker=second)  # fmt: skip


def test_unloadable_model_fails_the_endpoint_with_a_coded_error(make_org, start_worker):
    handle = make_org("Serve Broken")
    make_base_model("tiny-broken", "/nonexistent/weights", original=64, maximum=256)
    worker = start_worker(queues="inference", **FAST_REPLICA_ENV)
    owner = api_client(handle.key())
    created = owner.post("/v1/endpoints", {"model": "tiny-broken"}, format="json").json()
    url = f"/v1/endpoints/{created['id']}"
    body = wait_for(
        lambda: (e := owner.get(url).json())["status"] in ("failed", "ready") and e,
        timeout=60,
        what="the replica to give up",
        worker=worker,
    )
    assert body["status"] == "failed" and body["error"]["code"] == "replica_failed"
    events = owner.get(f"{url}/events").json()["data"]
    assert events[0]["level"] == "error" and "Replica failed" in events[0]["message"]  # newest
    # The worker slot is free again: a restart is picked up (and fails the same way).
    assert owner.post(f"{url}/start").json()["status"] == "pending"
    wait_for(lambda: owner.get(url).json()["status"] == "failed", timeout=60,
             what="the second attempt", worker=worker)  # fmt: skip
