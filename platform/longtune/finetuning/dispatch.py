"""Publishing a new job's first attempt (the queue and the send itself are compute's)."""

from __future__ import annotations

from longtune.finetuning.lifecycle import JOBS
from longtune.finetuning.models import JobStatus


def dispatch_new_job(job_pk: int) -> None:
    """After the creating transaction commits: publish attempt 1, then mark the job queued
    (a broker failure fails the job with ``queue_unavailable``, which releases its quota)."""
    JOBS.dispatch(
        job_pk,
        from_status=JobStatus.VALIDATING_FILES,
        queued_message=lambda job: f"Files validated; job queued on {job.queue}.",
    )
