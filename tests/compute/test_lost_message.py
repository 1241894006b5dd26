"""The lost-message test, with every real part: the API creates a job and publishes its
message to Redis, the broker loses it (the queue is purged), a real Celery worker process
waits on an empty queue — and the sweep re-dispatches the job, which then trains and
succeeds. The original message, delivered late, is refused by the attempt fence."""

from __future__ import annotations

import time

import pytest

from longtune.compute import broker, tasks
from longtune.compute.sweep import redispatch_lost_work
from longtune.finetuning.models import FineTuningJob
from longtune.tenancy.models import OrgQuota
from tests.conftest import api_client
from tests.finetuning.conftest import FAST_WORKER_ENV, TINY_ORIGINAL_CONTEXT, wait_for
from tests.finetuning.helpers import chat_examples, give_dedicated_queue, make_base_model, make_file
from workers.celery_app import app

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def lose_messages(queue: str) -> None:
    """What a broker restart without persistence does to the waiting messages."""
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


def test_a_job_whose_message_was_lost_is_redispatched_and_succeeds(
    make_org, start_worker, shared_storage, tiny_base_dir
):
    handle = make_org("Lost Message", plan="pro")
    OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)
    queue = give_dedicated_queue(handle.org)  # a queue of its own: no other test's messages
    make_base_model("tiny-lost", tiny_base_dir, original=TINY_ORIGINAL_CONTEXT, maximum=1024)
    file = make_file(handle.org, chat_examples(9))
    body = {
        "model": "tiny-lost",
        "training_file": file.public_id,
        "context_length": 256,
        "hyperparameters": {"n_epochs": 1},
        "lora": {"r": 4},
        "seed": 1,
    }
    response = api_client(handle.key()).post("/v1/fine_tuning/jobs", body, format="json")
    assert response.status_code == 201, response.content
    job = FineTuningJob.objects.for_org(handle.org).get(public_id=response.json()["id"])
    assert (job.status, job.queue, job.attempts) == ("queued", queue, 1)
    assert job.dispatched_at is not None
    assert broker.queue_depth(queue) == 1  # attempt 1 is in Redis ...

    lose_messages(queue)  # ... and the broker loses it
    assert broker.queue_is_empty(queue)
    worker = start_worker(queues=queue, **FAST_WORKER_ENV)
    time.sleep(2)
    job.refresh_from_db()
    assert job.status == "queued"  # nothing will ever come for it

    # Below the threshold nothing happens (a slow message is not a lost one).
    assert redispatch_lost_work(older_than_seconds=3600)["fine-tuning jobs"] == []
    assert redispatch_lost_work(older_than_seconds=1)["fine-tuning jobs"] == [job.public_id]
    late = broker.send(tasks.TRAIN, [job.pk, 1], queue)  # the lost message turns up after all

    wait_for(
        lambda: (
            FineTuningJob.objects.for_org(handle.org).get(pk=job.pk).status
            in ("succeeded", "failed", "cancelled")
        ),
        timeout=300,
        what="the re-dispatched job",
        worker=worker,
    )
    job.refresh_from_db()
    messages = list(job.events.order_by("pk").values_list("message", flat=True))
    assert job.status == "succeeded", (job.error, messages)
    assert job.attempts == 2
    assert any("re-dispatched as attempt 2" in m for m in messages), messages
    assert any(m.startswith("Attempt 2 started on ") for m in messages), messages
    assert late.get(timeout=60) == {"job": job.pk, "attempt": 1, "skipped": True}
    assert job.fine_tuned_model
