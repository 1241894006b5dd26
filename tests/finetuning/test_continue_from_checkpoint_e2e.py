"""Fine-tuning FROM a checkpoint, end to end through the official ``openai`` client and real
training and serving workers: job 1 succeeds with per-epoch checkpoints; job 2, whose ``model``
is job 1's epoch-2 checkpoint, trains starting from that checkpoint's adapter (its first step's
loss on the same row is far below job 1's first step from the base), succeeds, records its
lineage, and its model serves."""

from __future__ import annotations

import pytest

from longtune.tenancy.models import OrgQuota
from tests.conftest import api_client, openai_client
from tests.finetuning.conftest import FAST_WORKER_ENV, wait_for
from tests.finetuning.helpers import chat_examples, make_base_model, make_file

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
REPLICA_ENV = {"INFERENCE_HEARTBEAT_SECONDS": "1"}
# Same seed, batch and rows for both jobs: step 1 of each sees the same packed row, so the only
# difference between their first losses is the weights they start from.
HYPERPARAMETERS = {"batch_size": 1, "learning_rate_multiplier": 10}
EXTRA = {"context_length": 256}


def step_losses(client, job_id: str) -> dict[int, float]:
    events = client.fine_tuning.jobs.list_events(job_id, limit=100).data
    return {
        e.data["step"]: e.data["loss"]
        for e in events
        if e.type == "metrics" and e.data and "loss" in e.data
    }


def finished(client, job_id, worker, what):
    job = wait_for(
        lambda: (
            (j := client.fine_tuning.jobs.retrieve(job_id)).status
            in ("succeeded", "failed", "cancelled")
            and j
        ),
        timeout=400,
        what=what,
        worker=worker,
    )
    assert job.status == "succeeded", (job.error, worker.read_log()[-3000:])
    return job


def test_a_job_from_a_checkpoint_starts_from_its_weights_and_serves(
    live_server, make_org, start_worker, shared_storage, tiny_base_dir
):
    handle = make_org("Continue", plan="pro")
    OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)  # we poll
    make_base_model("tiny-cont", tiny_base_dir, original=64, maximum=1024)
    trainer = start_worker(queues="cpu,gpu", **FAST_WORKER_ENV)
    client = openai_client(handle.key(), live_server)
    file = make_file(handle.org, chat_examples(6))  # 2 rows of 256 tokens: 2 steps per epoch

    first = client.fine_tuning.jobs.create(
        model="tiny-cont",
        training_file=file.public_id,
        suffix="gen1",
        seed=2,
        method={"type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": 3, **HYPERPARAMETERS}}},
        extra_body={**EXTRA, "lora": {"r": 4, "alpha": 64}},
    )  # fmt: skip
    first = finished(client, first.id, trainer, "job 1")
    checkpoints = client.fine_tuning.jobs.checkpoints.list(first.id, limit=10).data
    checkpoint = next(c for c in checkpoints if c.step_number == 4)  # end of epoch 2
    parent = checkpoint.fine_tuned_model_checkpoint
    assert parent == f"{first.fine_tuned_model}:ckpt-step-4"

    second = client.fine_tuning.jobs.create(
        model=parent,
        training_file=file.public_id,
        suffix="gen2",
        seed=2,
        method={"type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": 1, **HYPERPARAMETERS}}},
        extra_body=EXTRA,
    )  # fmt: skip
    extra = second.model_extra or {}
    assert second.model == parent and extra["parent_model"] == parent
    assert extra["base_model"] == "tiny-cont"
    assert (extra["lora"]["r"], extra["lora"]["alpha"]) == (4, 64.0)  # the adapter's shape
    assert extra["rope_scaling"] == {"type": "yarn", "factor": 4.0}  # inherited
    second = finished(client, second.id, trainer, "job 2")

    # The proof that job 2 started from the checkpoint: on the same first row, job 1 from the
    # base measured `base_loss`; job 2 measures about what job 1 measured after 4 updates.
    first_losses, second_losses = step_losses(client, first.id), step_losses(client, second.id)
    base_loss, after_four = first_losses[1], first_losses[5]
    assert base_loss - after_four > 0.2, first_losses  # job 1 learned something
    assert second_losses[1] < base_loss - 0.5 * (base_loss - after_four), (
        first_losses,
        second_losses,
    )
    messages = [e.message for e in client.fine_tuning.jobs.list_events(second.id).data]
    assert any(m.startswith(f"Starting from the weights of {parent}") for m in messages)

    model = client.models.retrieve(second.fine_tuned_model)
    assert (model.model_extra or {})["parent_model"] == parent
    assert (model.model_extra or {})["root"] == "tiny-cont"
    assert second.fine_tuned_model.startswith(f"ft:tiny-cont:{handle.org.slug}:gen2:")

    owner = api_client(handle.key())
    endpoint = owner.post("/v1/endpoints", {"model": second.fine_tuned_model}, format="json")
    assert endpoint.status_code == 201, endpoint.content
    server = start_worker(queues="inference", **REPLICA_ENV)
    url = f"/v1/endpoints/{endpoint.json()['id']}"
    wait_for(
        lambda: owner.get(url).json()["status"] in ("ready", "failed"),
        timeout=300,
        what="job 2's endpoint",
        worker=server,
    )
    assert owner.get(url).json()["status"] == "ready", server.read_log()[-3000:]
    reply = client.chat.completions.create(
        model=second.fine_tuned_model,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=4,
    )
    assert reply.model == second.fine_tuned_model and reply.usage.completion_tokens >= 1


def test_a_full_fine_tune_continues_from_a_full_fine_tunes_weights(
    live_server, make_org, start_worker, shared_storage, tiny_base_dir
):
    """The full-weights path through the worker: job 2 from job 1's final full model."""
    handle = make_org("Continue full", plan="pro")
    OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)
    make_base_model("tiny-cont-full", tiny_base_dir, original=64, maximum=1024)
    trainer = start_worker(queues="cpu,gpu", **FAST_WORKER_ENV)
    client = openai_client(handle.key(), live_server)
    file = make_file(handle.org, chat_examples(6))
    body = {
        "training_file": file.public_id,
        "seed": 2,
        "method": {"type": "supervised",
                   "supervised": {"hyperparameters": {"n_epochs": 2, **HYPERPARAMETERS}}},
    }  # fmt: skip
    first = client.fine_tuning.jobs.create(
        model="tiny-cont-full", extra_body={**EXTRA, "full": True}, **body
    )
    first = finished(client, first.id, trainer, "full job 1")
    second = client.fine_tuning.jobs.create(model=first.fine_tuned_model, extra_body=EXTRA, **body)
    assert (second.model_extra or {})["full"] is True  # inherited, not asked for
    second = finished(client, second.id, trainer, "full job 2")
    first_losses, second_losses = step_losses(client, first.id), step_losses(client, second.id)
    base_loss, last = first_losses[1], first_losses[max(first_losses)]
    assert base_loss > last, first_losses
    assert second_losses[1] < base_loss - 0.5 * (base_loss - last), (first_losses, second_losses)
    model = client.models.retrieve(second.fine_tuned_model).model_extra or {}
    assert (model["method"], model["parent_model"]) == ("full", first.fine_tuned_model)
