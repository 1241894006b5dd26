"""Checkpoints as OpenAI exposes them: one servable model per epoch (the newest three kept),
listed by GET /v1/fine_tuning/jobs/{id}/checkpoints with their metrics, each deployable by its
``fine_tuned_model_checkpoint`` name -- through the official ``openai`` client and real
training and serving workers."""

from __future__ import annotations

import pytest

from longtune.catalog.models import FineTunedModel
from longtune.tenancy.models import OrgQuota
from tests.conftest import api_client, openai_client
from tests.finetuning.conftest import FAST_WORKER_ENV, wait_for
from tests.finetuning.helpers import chat_examples, make_base_model, make_file

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
REPLICA_ENV = {"INFERENCE_HEARTBEAT_SECONDS": "1"}


def test_one_deployable_checkpoint_per_epoch_the_newest_three_kept(
    live_server, make_org, start_worker, shared_storage, tiny_base_dir
):
    handle = make_org("Checkpoints", plan="pro")
    OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)  # we poll
    make_base_model("tiny-ckpt", tiny_base_dir, original=64, maximum=1024)
    trainer = start_worker(queues="cpu,gpu", **FAST_WORKER_ENV)
    owner = api_client(handle.key())
    client = openai_client(handle.key(), live_server)
    file = make_file(handle.org, chat_examples(6))  # 2 rows of 256 tokens: 2 steps per epoch
    created = client.fine_tuning.jobs.create(
        model="tiny-ckpt",
        training_file=file.public_id,
        suffix="ckpt",
        seed=2,
        method={"type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": 5, "batch_size": 1}}},
        extra_body={"context_length": 256, "lora": {"r": 4, "alpha": 8}},
    )  # fmt: skip
    job = wait_for(
        lambda: (
            (j := client.fine_tuning.jobs.retrieve(created.id)).status in ("succeeded", "failed")
            and j
        ),
        timeout=400,
        what="the five-epoch job",
        worker=trainer,
    )
    assert job.status == "succeeded", (job.error, trainer.read_log()[-3000:])
    per_epoch = (job.model_extra or {})["progress"]["total_steps"] // 5
    epoch_steps = [per_epoch * e for e in (1, 2, 3, 4)]  # the 5th epoch's model is the job's

    listed = client.fine_tuning.jobs.checkpoints.list(job.id, limit=50).data
    by_step = {c.step_number: c for c in listed}
    assert set(epoch_steps) <= set(by_step)
    names = {s: by_step[s].fine_tuned_model_checkpoint for s in epoch_steps}
    assert names == {s: f"{job.fine_tuned_model}:ckpt-step-{s}" for s in epoch_steps}
    for epoch, step in enumerate(epoch_steps, start=1):
        assert by_step[step].metrics.step == step and by_step[step].metrics.train_loss > 0
        assert (by_step[step].model_extra or {})["deployable"] is (epoch > 1)  # newest 3 kept
    oldest = FineTunedModel.objects.for_org(handle.org).get(name=names[epoch_steps[0]])
    assert oldest.deleted_at is not None and oldest.artifact_bytes == 0

    # The pruned one is gone; a kept one deploys on the shared server and answers.
    gone = owner.post("/v1/endpoints", {"model": names[epoch_steps[0]]}, format="json")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
    checkpoint = names[epoch_steps[2]]
    endpoint = owner.post("/v1/endpoints", {"model": checkpoint}, format="json")
    assert endpoint.status_code == 201, endpoint.content
    assert endpoint.json()["hosting"] == "shared_server"
    server = start_worker(queues="inference", **REPLICA_ENV)
    url = f"/v1/endpoints/{endpoint.json()['id']}"
    wait_for(
        lambda: owner.get(url).json()["status"] in ("ready", "failed"),
        timeout=300,
        what="the checkpoint's endpoint",
        worker=server,
    )
    assert owner.get(url).json()["status"] == "ready", server.read_log()[-3000:]
    reply = client.chat.completions.create(
        model=checkpoint, messages=[{"role": "user", "content": "hello"}], max_tokens=4
    )
    assert reply.model == checkpoint and reply.usage.completion_tokens >= 1
    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert any(m.startswith(f"Epoch 4 checkpoint {names[epoch_steps[3]]} saved") for m in events)
