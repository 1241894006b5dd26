"""The hard time limit holds on the solo pool, which Celery does not time.

A real training worker (solo, as scripts/run.sh runs it) whose training step blocks in C code
with the soft limit's SIGALRM blocked and swallows exceptions (tests/fixtures/stuck_training.py):
past the hard limit the job fails through its lifecycle with ``time_limit_exceeded`` and the
worker process ends itself with ``HARD_LIMIT_EXIT_CODE``, for its supervisor to restart
(scripts/supervise.sh, tested in tests/compute/test_supervise.py). Nothing then runs the
killed work again: not the watchdog, not a redelivered message on a fresh worker.
"""

from __future__ import annotations

import pytest

from longtune.finetuning import lifecycle
from longtune.finetuning.models import FineTuningJob
from longtune.tenancy.models import OrgQuota
from tests.conftest import api_client
from tests.finetuning.conftest import FAST_WORKER_ENV, TINY_ORIGINAL_CONTEXT, wait_for
from tests.finetuning.helpers import chat_examples, make_base_model, make_file
from workers.finetuning import run_watchdog
from workers.time_limits import BACKSTOP_SECONDS, HARD_LIMIT_EXIT_CODE

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


# soft: never honoured by the stuck task; hard: 6 s after the task started
STUCK_LIMITS = {"GPU_WORK_TIME_LIMIT_SECONDS": "2", "TASK_HARD_TIME_LIMIT_GRACE_SECONDS": "4"}


def job_row(job: FineTuningJob) -> FineTuningJob:
    return FineTuningJob.objects.unscoped_across_orgs().get(pk=job.pk)


def create_job(make_org, name: str) -> FineTuningJob:
    handle = make_org(name, plan="pro")
    OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)
    body = {
        "model": "tiny-stuck",
        "training_file": make_file(handle.org, chat_examples(20)).public_id,
        "context_length": 256,
        "lora": {"r": 4},
    }
    response = api_client(handle.key()).post("/v1/fine_tuning/jobs", body, format="json")
    assert response.status_code == 201, response.content
    return FineTuningJob.objects.unscoped_across_orgs().get(public_id=response.json()["id"])


@pytest.fixture
def tiny_stuck_model(tiny_base_dir):
    make_base_model("tiny-stuck", tiny_base_dir, original=TINY_ORIGINAL_CONTEXT, maximum=1024)


def test_training_stuck_in_c_code_fails_at_the_hard_limit_and_its_solo_worker_exits(
    make_org, start_worker, shared_storage, tiny_stuck_model
):
    job = create_job(make_org, "Stuck Trainer")
    stuck = start_worker(
        "gpu", include="tests.fixtures.stuck_training", **FAST_WORKER_ENV, **STUCK_LIMITS
    )
    wait_for(lambda: job_row(job).status == "running", timeout=120, what="the claim", worker=stuck)
    wait_for(
        lambda: job_row(job).status != "running",
        timeout=120,  # 6 s of limit; the rest is a loaded machine
        what="the hard time limit",
        worker=stuck,
    )
    row = job_row(job)
    assert row.status == "failed", (row.status, stuck.read_log()[-3000:])
    assert row.error["code"] == "time_limit_exceeded", row.error
    assert "hard time limit" in row.error["message"]  # not the soft limit's path
    stuck.proc.wait(60)
    assert stuck.proc.returncode == HARD_LIMIT_EXIT_CODE, stuck.read_log()[-3000:]
    assert "ran past its hard time limit of 6 s" in stuck.read_log()

    # Nothing runs it again: the watchdog finds no running work with a silent heartbeat...
    assert run_watchdog(stale_after_seconds=0) == []
    # ...and the message, redelivered to the fresh worker a supervisor starts, claims nothing.
    fresh = start_worker("gpu", **FAST_WORKER_ENV)
    lifecycle.JOBS.publish(job.pk, row.attempts, row.queue)
    wait_for(
        lambda: "stale or finished, skipping" in fresh.read_log(),
        timeout=60,
        what="the redelivered message to be skipped",
        worker=fresh,
    )
    row = job_row(job)
    assert (row.status, row.attempts) == ("failed", 1)
    assert fresh.proc.poll() is None  # the fresh worker is not stuck or gone


def test_code_holding_the_gil_is_ended_by_the_backstop_and_its_work_cannot_run_forever(
    make_org, start_worker, shared_storage, tiny_stuck_model, settings
):
    """A regex backtracking under the GIL starves the watchdog thread: faulthandler's C timer
    ends the process BACKSTOP_SECONDS past the hard limit. The work is then still "running"
    with a silent heartbeat; the lifecycle's watchdog re-queues it, at most
    FINETUNE_MAX_ATTEMPTS times in all, then fails it worker_lost."""
    job = create_job(make_org, "GIL Holder")
    stuck = start_worker(
        "gpu",
        include="tests.fixtures.stuck_training",
        STUCK_TRAINING="gil",
        **FAST_WORKER_ENV,
        **STUCK_LIMITS,
    )
    wait_for(lambda: job_row(job).status == "running", timeout=120, what="the claim", worker=stuck)
    stuck.proc.wait(6 + BACKSTOP_SECONDS + 90)  # the hard limit, the backstop, a loaded box
    assert stuck.proc.returncode == 1, stuck.read_log()[-3000:]  # faulthandler's exit
    log = stuck.read_log()
    assert "Timeout (0:00:36)!" in log and "gil_held_train" in log  # every thread's stack
    assert job_row(job).status == "running"  # nothing could fail it from inside

    settings.FINETUNE_MAX_ATTEMPTS = 1  # the last attempt: the watchdog fails it
    assert run_watchdog(stale_after_seconds=0) == []
    row = job_row(job)
    assert (row.status, row.error["code"], row.attempts) == ("failed", "worker_lost", 1)
