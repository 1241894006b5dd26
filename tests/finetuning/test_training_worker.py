"""Fine-tuning with every real part: the official `openai` client -> a live LongTune server ->
PostgreSQL -> Redis -> real Celery worker processes training the tiny model -> moto's S3.

- end to end: upload, scrub, fine-tune at 4× the base context with YaRN, artifacts, /v1/models
- crash: SIGKILL the worker after a checkpoint, a fresh worker (empty disk) + the watchdog
  resume from the checkpoint in object storage
- cancel: a running job stops at a step boundary with a checkpoint
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from longtune.catalog.models import FineTunedModel
from longtune.finetuning.models import FineTuningJob, JobCheckpoint
from longtune.tenancy.models import OrgQuota
from tests.conftest import api_client, openai_client
from tests.finetuning.conftest import FAST_WORKER_ENV, TINY_ORIGINAL_CONTEXT, wait_for
from tests.finetuning.helpers import (
    chat_examples,
    give_dedicated_queue,
    jsonl,
    make_base_model,
    make_file,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
JOBS = "/v1/fine_tuning/jobs"


def roomy_org(make_org, name: str):
    """An org whose request rate and job quotas do not get in the way of polling."""
    handle = make_org(name, plan="pro")
    OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)
    return handle


def job_row(job_id: str) -> FineTuningJob:
    return FineTuningJob.objects.unscoped_across_orgs().get(public_id=job_id)


def messages(job_id: str) -> list[str]:
    return list(job_row(job_id).events.order_by("pk").values_list("message", flat=True))


def test_openai_client_end_to_end(
    live_server, make_org, start_worker, shared_storage, tiny_base_dir
):
    handle = roomy_org(make_org, "E2E Tune")
    make_base_model("tiny-e2e", tiny_base_dir, original=TINY_ORIGINAL_CONTEXT, maximum=1024)
    client = openai_client(handle.key("member"), live_server, timeout=60)
    worker = start_worker(queues="cpu,gpu", **FAST_WORKER_ENV)

    uploaded = client.files.create(
        file=("train.jsonl", jsonl(chat_examples(18))), purpose="fine-tune"
    )
    wait_for(
        lambda: client.files.retrieve(uploaded.id).status == "processed",
        timeout=120,
        what="the scrubber",
        worker=worker,
    )
    created = client.fine_tuning.jobs.create(
        model="tiny-e2e",
        training_file=uploaded.id,
        suffix="e2e",
        seed=3,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 1}},
        },
        extra_body={
            "context_length": 256,
            "rope_scaling": {"type": "yarn"},
            "lora": {"r": 4, "alpha": 8},
        },
    )
    assert created.status in ("validating_files", "queued", "running")

    job = wait_for(
        lambda: (
            (j := client.fine_tuning.jobs.retrieve(created.id)).status
            in ("succeeded", "failed", "cancelled")
            and j
        ),
        timeout=300,
        what="the training job",
        worker=worker,
    )
    assert job.status == "succeeded", (job.error, messages(created.id), worker.read_log()[-4000:])
    assert job.fine_tuned_model == f"ft:tiny-e2e:{handle.org.slug}:e2e:{job.id}"
    # Billed tokens are the packed rows' real tokens (one epoch), never their padding.
    (packed,) = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data
                 if e.message.startswith("Data packed into ")]  # fmt: skip
    assert job.trained_tokens == (packed.data or {})["real_tokens"]
    extra = job.model_extra or {}
    progress = extra["progress"]
    assert progress["step"] == progress["total_steps"] >= 4 and progress["loss"] > 0
    assert extra["rope_scaling"] == {"type": "yarn", "factor": 256 / TINY_ORIGINAL_CONTEXT}

    # Listing, events (newest first, metrics every step), checkpoints.
    assert job.id in [j.id for j in client.fine_tuning.jobs.list(limit=10).data]
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert events[0].message == "The job has successfully completed."
    metric_steps = [e.data["step"] for e in events if e.type == "metrics"]
    assert sorted(metric_steps) == list(range(1, progress["total_steps"] + 1))
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints][-1] == 2 and checkpoints[0].metrics.step >= 2

    # Artifacts in object storage: adapter + extended config + tokenizer + summary.
    row = FineTunedModel.objects.for_org(handle.org).get(name=job.fine_tuned_model)
    keys = {
        info.key.removeprefix(row.artifact_prefix)
        for info in shared_storage.list(row.artifact_prefix)
    }
    assert {"adapter_model.safetensors", "adapter_config.json", "config.json",
            "training_summary.json", "tokenizer.json"} <= keys  # fmt: skip
    assert row.artifact_prefix.startswith(f"orgs/{handle.org.public_id}/models/{row.public_id}/")
    config = json.loads(shared_storage.open(row.artifact_prefix + "config.json").read())
    assert config["rope_parameters"]["rope_type"] == "yarn"
    assert config["rope_parameters"]["factor"] == pytest.approx(4.0)
    assert config["max_position_embeddings"] == 256

    # The metrics CSV is a result file.
    (result_file,) = job.result_files
    rows = list(csv.DictReader(io.StringIO(client.files.content(result_file).text)))
    assert [int(r["step"]) for r in rows] == list(range(1, progress["total_steps"] + 1))

    # /v1/models: the base model and the new fine-tuned model; another org cannot see it.
    assert {"tiny-e2e", job.fine_tuned_model} <= {m.id for m in client.models.list().data}
    assert client.models.retrieve(job.fine_tuned_model).owned_by == handle.org.public_id
    other = make_org("Other Tune")
    response = api_client(other.owner_secret).get(f"/v1/models/{job.fine_tuned_model}")
    assert response.status_code == 404


def create_long_job(handle, *, steps_examples: int = 60) -> dict:
    """A job of ~steps_examples/3 steps on the org's dedicated queue (clean of stale messages)."""
    file = make_file(handle.org, chat_examples(steps_examples))
    body = {
        "model": "tiny-long",
        "training_file": file.public_id,
        "context_length": 256,
        "hyperparameters": {"n_epochs": 1},
        "lora": {"r": 4},
        "seed": 1,
    }
    response = api_client(handle.key()).post(JOBS, body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_worker_killed_mid_training_resumes_from_stored_checkpoint(
    make_org, start_worker, shared_storage, tiny_base_dir, tmp_path
):
    from workers.finetuning import run_watchdog

    handle = roomy_org(make_org, "Crash Tune")
    queue = give_dedicated_queue(handle.org)
    make_base_model("tiny-long", tiny_base_dir, original=TINY_ORIGINAL_CONTEXT, maximum=1024)
    first = start_worker(
        queues=queue, LONGTUNE_VAR_DIR=str(tmp_path / "machine-a"), **FAST_WORKER_ENV
    )
    job_id = create_long_job(handle)["id"]
    assert job_row(job_id).queue == queue

    wait_for(
        lambda: JobCheckpoint.objects.unscoped_across_orgs().filter(job__public_id=job_id).exists(),
        timeout=240,
        what="a first checkpoint",
        worker=first,
    )
    first.kill()  # SIGKILL: no cleanup, the message stays unacked, the heartbeat stops
    killed = job_row(job_id)
    assert killed.status == "running"
    stored_step = (
        JobCheckpoint.objects.unscoped_across_orgs()
        .filter(job=killed)
        .exclude(storage_prefix="")
        .order_by("-step")[0]
        .step
    )
    assert killed.progress["step"] < killed.progress["total_steps"], "finished before the kill"

    # A new machine: empty var dir, so it can only resume from object storage.
    second = start_worker(
        queues=queue, LONGTUNE_VAR_DIR=str(tmp_path / "machine-b"), **FAST_WORKER_ENV
    )
    requeued = wait_for(
        lambda: run_watchdog(stale_after_seconds=3), timeout=60, what="the watchdog"
    )
    assert requeued == [job_id]
    wait_for(
        lambda: job_row(job_id).status in ("succeeded", "failed"),
        timeout=300,
        what="the resumed job",
        worker=second,
    )
    job = job_row(job_id)
    assert job.status == "succeeded", (job.error, messages(job_id))
    assert job.attempts == 2
    log = messages(job_id)
    assert any("re-queued as attempt 2" in m for m in log), log
    assert f"Downloaded checkpoint of step {stored_step} from object storage." in log
    assert any(m.startswith(f"Resumed from step {stored_step} ") for m in log), log
    assert any(m.startswith(f"Training from step {stored_step} of ") for m in log), log
    # The metrics CSV spans both attempts (restored from storage, then appended).
    steps = [int(r["step"]) for r in csv.DictReader(io.StringIO(
        shared_storage.open(job.metrics_file.scrubbed_key).read().decode()))]  # fmt: skip
    assert steps == list(range(1, job.progress["total_steps"] + 1))


def test_cancel_running_job_stops_with_checkpoint(
    make_org, start_worker, shared_storage, tiny_base_dir
):
    handle = roomy_org(make_org, "Cancel Tune")
    queue = give_dedicated_queue(handle.org)
    make_base_model("tiny-long", tiny_base_dir, original=TINY_ORIGINAL_CONTEXT, maximum=1024)
    worker = start_worker(queues=queue, **FAST_WORKER_ENV)
    job_id = create_long_job(handle)["id"]
    wait_for(
        lambda: job_row(job_id).progress.get("step", 0) >= 1,
        timeout=240,
        what="training to start",
        worker=worker,
    )
    response = api_client(handle.key()).post(f"{JOBS}/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["cancel_requested"] is True
    wait_for(
        lambda: job_row(job_id).status != "running", timeout=120, what="the stop", worker=worker
    )
    job = job_row(job_id)
    assert job.status == "cancelled", (job.error, messages(job_id))
    stopped_at = job.progress["step"]
    assert stopped_at < job.progress["total_steps"]
    checkpoint = JobCheckpoint.objects.unscoped_across_orgs().get(job=job, step=stopped_at)
    assert any(
        i.key.endswith("trainable.safetensors")
        for i in shared_storage.list(checkpoint.storage_prefix)
    )
    log = messages(job_id)
    assert "Cancellation requested; stopping at the next step boundary." in log
    assert f"Job cancelled at step {stopped_at}; checkpoint saved." in log
    assert 0 < job.trained_tokens < job.progress["total_steps"] * 256
    assert not FineTunedModel.objects.unscoped_across_orgs().filter(job=job).exists()
