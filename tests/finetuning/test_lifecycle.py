"""Worker-side state machine: attempt fencing, the watchdog, bootstrap_demo."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from longtune.catalog.models import BaseModel
from longtune.finetuning import lifecycle
from tests.finetuning.helpers import give_dedicated_queue, make_job

pytestmark = pytest.mark.django_db


def test_claim_and_stale_messages(org_a):
    job = make_job(org_a.org, status="queued")
    assert lifecycle.claim(job.pk, attempt=2, worker="w") is None  # not this attempt's message
    claimed = lifecycle.claim(job.pk, attempt=1, worker="w1")
    assert claimed.status == "running" and claimed.worker == "w1" and claimed.heartbeat_at
    assert lifecycle.claim(job.pk, attempt=1, worker="w2") is None  # redelivered duplicate: skip


def test_claim_honours_a_cancel_that_raced_the_queue(org_a):
    job = make_job(org_a.org, status="queued", cancel_requested=True)
    assert lifecycle.claim(job.pk, attempt=1, worker="w") is None
    job.refresh_from_db()
    assert job.status == "cancelled" and job.trained_tokens == 0


def test_watchdog_requeues_a_silent_job_and_fences_the_old_attempt(org_a):
    job = make_job(org_a.org, status="running", heartbeat_at=timezone.now() - timedelta(minutes=10))
    fresh = make_job(org_a.org, status="running", heartbeat_at=timezone.now())
    requeued = lifecycle.requeue_stale_jobs(stale_after=timedelta(minutes=3), max_attempts=3)
    assert [(r.public_id, r.attempt, r.queue) for r in requeued] == [(job.public_id, 2, "gpu")]
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("queued", 2)
    assert "re-queued as attempt 2" in job.events.last().message
    # The old worker wakes up: every write it tries is refused, so it stops.
    assert lifecycle.claim(job.pk, attempt=1, worker="old") is None
    lifecycle.claim(job.pk, attempt=2, worker="new")
    assert lifecycle.record_progress(job.pk, 1, {"step": 3}).owned is False
    assert lifecycle.heartbeat(job.pk, 1) is False
    assert lifecycle.finish_failed(job.pk, 1, code="x", message="late") is False
    assert lifecycle.record_progress(job.pk, 2, {"step": 3}).owned is True
    fresh.refresh_from_db()
    assert fresh.attempts == 1 and fresh.status == "running"


def test_watchdog_gives_up_after_max_attempts(org_a):
    old = timezone.now() - timedelta(minutes=10)
    job = make_job(org_a.org, status="running", heartbeat_at=old, attempts=3)
    assert lifecycle.requeue_stale_jobs(stale_after=timedelta(minutes=3), max_attempts=3) == []
    job.refresh_from_db()
    assert job.status == "failed" and job.error["code"] == "worker_lost"


def test_progress_reports_the_cancel_flag(org_a):
    job = make_job(org_a.org, status="running")
    assert lifecycle.record_progress(job.pk, 1, {"step": 1}).cancel is False
    type(job).objects.unscoped_across_orgs().filter(pk=job.pk).update(cancel_requested=True)
    control = lifecycle.record_progress(job.pk, 1, {"step": 2, "total_steps": 4})
    assert control == lifecycle.StepControl(owned=True, cancel=True)
    job.refresh_from_db()
    assert job.progress["step"] == 2 and "updated_at" in job.progress


def test_bootstrap_demo_builds_once_and_registers(tmp_path):
    call_command("bootstrap_demo", models_dir=str(tmp_path), original_context=128)
    config = tmp_path / "tiny-llama" / "config.json"
    built_at = config.stat().st_mtime_ns
    call_command("bootstrap_demo", models_dir=str(tmp_path), original_context=128)
    assert config.stat().st_mtime_ns == built_at  # reused, not rebuilt
    model = BaseModel.objects.get(name="tiny-llama")
    assert model.location == str((tmp_path / "tiny-llama").resolve())
    assert model.original_context_length == 128 and model.max_context_length == 128 * 32
    assert model.is_public


def test_watchdog_sends_a_lost_attempt_where_the_orgs_work_goes_now(org_a):
    """A job whose dedicated queue lost its machines (the capacity is no longer active) is
    re-queued on the queue routing names today, not on the dead one."""
    from longtune.compute.models import DedicatedCapacity

    queue = give_dedicated_queue(org_a.org)
    job = make_job(
        org_a.org, status="running", queue=queue, heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    DedicatedCapacity.objects.for_org(org_a.org).update(active=False)
    requeued = lifecycle.requeue_stale_jobs(stale_after=timedelta(minutes=3), max_attempts=3)
    assert [(r.public_id, r.queue) for r in requeued] == [(job.public_id, "gpu")]
    job.refresh_from_db()
    assert job.queue == "gpu"
    assert f"on gpu (was {queue})" in job.events.last().message
    # With the capacity active again, a lost attempt goes back to the org's own machines.
    DedicatedCapacity.objects.for_org(org_a.org).update(active=True)
    job.status, job.heartbeat_at = "running", timezone.now() - timedelta(hours=1)
    job.save(update_fields=["status", "heartbeat_at"])
    assert [
        r.queue
        for r in lifecycle.requeue_stale_jobs(stale_after=timedelta(minutes=3), max_attempts=5)
    ] == [queue]
