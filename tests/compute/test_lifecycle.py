"""The generic GPU-work lifecycle (exercised through the fine-tuning binding, ``JOBS``):
fencing of every write, the dispatch stamp, and the re-dispatch of lost messages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from longtune.compute import broker, sweep
from longtune.compute.lifecycle import GpuWorkLifecycle
from longtune.finetuning.lifecycle import JOBS
from longtune.finetuning.models import FineTuningJob
from tests.finetuning.helpers import make_job

pytestmark = pytest.mark.django_db
LONG_AGO = timedelta(minutes=30)


def always_idle(queue: str) -> bool:
    return True


@pytest.fixture
def published(monkeypatch):
    """Messages ``broker.send`` would have published (no broker in these tests)."""
    sent: list[tuple[str, list, str]] = []
    monkeypatch.setattr(broker, "send", lambda task, args, queue: sent.append((task, args, queue)))
    return sent


def test_every_worker_write_is_fenced_by_pk_attempt_and_running(org_a):
    job = make_job(org_a.org, status="queued")
    other = make_job(org_a.org, status="queued")
    assert JOBS.claim(job.pk, 1, "w") is not None
    # Wrong attempt, or another row's pk: refused.
    assert JOBS.heartbeat(job.pk, 2) is False
    assert JOBS.record_progress(job.pk, 2, {"step": 1}).owned is False
    assert JOBS.finish_failed(job.pk, 2, code="x", message="stale") is False
    assert JOBS.heartbeat(other.pk, 1) is False  # queued, not running
    # The owner writes; once finished, nothing more is accepted — not even from itself.
    assert JOBS.heartbeat(job.pk, 1) is True
    assert JOBS.finish(job.pk, 1, "succeeded", messages=["done"], progress={"step": 3})
    assert JOBS.heartbeat(job.pk, 1) is False
    assert JOBS.finish_failed(job.pk, 1, code="x", message="late") is False
    job.refresh_from_db()
    assert job.status == "succeeded" and job.error is None and job.progress["step"] == 3


def test_publish_stamps_the_dispatch_of_its_own_attempt_only(org_a, published):
    job = make_job(org_a.org, status="queued", attempts=2)
    JOBS.publish(job.pk, 1, job.queue)  # a stale attempt's publish
    job.refresh_from_db()
    assert job.dispatched_at is None
    JOBS.publish(job.pk, 2, job.queue)
    job.refresh_from_db()
    assert job.dispatched_at is not None
    assert published == [("longtune.finetuning.train", [job.pk, 1], "gpu"),
                         ("longtune.finetuning.train", [job.pk, 2], "gpu")]  # fmt: skip


def test_dispatch_fails_the_job_when_the_broker_is_down(org_a, monkeypatch):
    def broken(*args):
        raise ConnectionError("broker down")

    monkeypatch.setattr(broker, "send", broken)
    job = make_job(org_a.org, status="validating_files")
    assert JOBS.dispatch(job.pk, from_status="validating_files", queued_message=str) is False
    job.refresh_from_db()
    assert job.status == "failed" and job.error["code"] == "queue_unavailable"
    assert job.trained_tokens == 0  # fine-tuning's never-ran fields


def test_a_lost_message_is_redispatched_with_a_new_attempt(org_a, published):
    lost = make_job(org_a.org, status="queued", dispatched_at=timezone.now() - LONG_AGO)
    assert sweep.redispatch_lost_work(600, always_idle)["fine-tuning jobs"] == [lost.public_id]
    lost.refresh_from_db()
    assert (lost.status, lost.attempts) == ("queued", 2)
    assert published == [("longtune.finetuning.train", [lost.pk, 2], "gpu")]
    assert lost.dispatched_at > timezone.now() - timedelta(minutes=1)
    event = lost.events.last()
    assert event.level == "warn" and "re-dispatched as attempt 2" in event.message
    # The original message turns up late: the fence refuses it; the new one is claimed.
    assert JOBS.claim(lost.pk, 1, "late") is None
    assert JOBS.claim(lost.pk, 2, "w").status == "running"
    # Just re-dispatched: the next sweep leaves it alone.
    assert sweep.redispatch_lost_work(600, always_idle)["fine-tuning jobs"] == []


def test_work_never_published_is_found_by_its_creation_time(org_a, published):
    """The web process died between commit and publish: no dispatched_at at all."""
    job = make_job(org_a.org, status="validating_files")
    FineTuningJob.objects.unscoped_across_orgs().filter(pk=job.pk).update(
        created_at=timezone.now() - LONG_AGO
    )
    assert JOBS.sweep_lost_messages(timedelta(minutes=10), always_idle) == [job.public_id]
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("queued", 2)


def test_the_sweep_leaves_alone_what_is_not_lost(org_a, published):
    old = timezone.now() - LONG_AGO
    recent = make_job(org_a.org, status="queued", dispatched_at=timezone.now())
    running = make_job(org_a.org, status="running", dispatched_at=old, heartbeat_at=old)
    finished = make_job(org_a.org, status="succeeded", dispatched_at=old)
    waiting = make_job(org_a.org, status="queued", dispatched_at=old, queue="gpu.busy")
    # A queue that still holds messages: this job's message may be waiting behind them.
    probed = []

    def idle(queue: str) -> bool:
        probed.append(queue)
        return queue != "gpu.busy"

    assert JOBS.redispatch_lost(older_than=timedelta(minutes=10), queue_is_idle=idle) == []
    assert probed == ["gpu.busy"]  # one probe per queue, only where a candidate waits
    for job, attempts in ((recent, 1), (running, 1), (finished, 1), (waiting, 1)):
        job.refresh_from_db()
        assert job.attempts == attempts
    assert published == []


def test_a_failing_sweep_does_not_stop_the_others(org_a, published, monkeypatch):
    def broken(older_than, queue_is_idle):
        raise RuntimeError("boom")

    lost = make_job(org_a.org, status="queued", dispatched_at=timezone.now() - LONG_AGO)
    monkeypatch.setattr(sweep, "_SWEEPS", {"broken": broken, **sweep.registered()})
    done = sweep.redispatch_lost_work(600, always_idle)
    assert done["broken"] == [] and done["fine-tuning jobs"] == [lost.public_id]


def test_every_kind_of_work_is_registered():
    assert {"fine-tuning jobs", "shared servers"} <= set(sweep.registered())


def test_the_lifecycle_is_parameterized_not_copied(org_a):
    """Another binding of the same model (as evaluation jobs will bind theirs) writes its
    own events and messages through the same code."""
    recorded = []
    other = GpuWorkLifecycle(
        model=FineTuningJob,
        task="longtune.test.other",
        record_event=lambda row, message, **kw: recorded.append(message),
        label="Evaluation job",
        activity="evaluation",
    )
    job = make_job(org_a.org, status="queued")
    assert other.claim(job.pk, 1, "w1") is not None
    cancelled = make_job(org_a.org, status="queued", cancel_requested=True)
    assert other.claim(cancelled.pk, 1, "w1") is None
    assert recorded == ["Evaluation job started on w1.", "Job cancelled before evaluation started."]
