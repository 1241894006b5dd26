"""Sending a training attempt to its Celery queue, by task NAME.

Why by name: the web process must not import the task module (it is the bridge to torch); it
only needs the Celery app to publish a message.
"""

from __future__ import annotations

import logging

from longtune.finetuning.events import record_event
from longtune.finetuning.models import EventLevel, FineTuningJob, JobStatus

logger = logging.getLogger("longtune.finetuning")

TRAIN_TASK = "longtune.finetuning.train"
WATCHDOG_TASK = "longtune.finetuning.watchdog"


def default_queue_for(org) -> str:
    """The org's dedicated GPU queue when staff gave it one, else the shared ``gpu`` pool."""
    from longtune.finetuning.models import OrgFinetuningSettings

    dedicated = (
        OrgFinetuningSettings.objects.for_org(org)
        .exclude(dedicated_queue__isnull=True)
        .exclude(dedicated_queue="")
        .values_list("dedicated_queue", flat=True)
        .first()
    )
    return dedicated or "gpu"


def send_training(job_pk: int, attempt: int, queue: str) -> None:
    from workers.celery_app import app

    app.send_task(TRAIN_TASK, args=[job_pk, attempt], queue=queue)


def dispatch_new_job(job_pk: int) -> None:
    """After the creating transaction commits: publish attempt 1, then mark the job queued.

    A broker failure must not turn into a 500 for a job that is already saved: the job is
    failed with a coded error instead, which also releases its quota.
    """
    job = FineTuningJob.objects.unscoped_across_orgs().get(pk=job_pk)
    try:
        send_training(job.pk, job.attempts, job.queue)
    except Exception as exc:  # noqa: BLE001 - any broker error
        logger.exception("could not enqueue %s", job.public_id)
        FineTuningJob.objects.unscoped_across_orgs().filter(
            pk=job.pk, status=JobStatus.VALIDATING_FILES
        ).update(
            status=JobStatus.FAILED,
            error={
                "code": "queue_unavailable",
                "message": f"Could not enqueue the job: {type(exc).__name__}",
                "param": None,
            },
            trained_tokens=0,
        )
        record_event(job, "The job could not be queued.", level=EventLevel.ERROR)
        return
    moved = (
        FineTuningJob.objects.unscoped_across_orgs()
        .filter(pk=job.pk, status=JobStatus.VALIDATING_FILES)
        .update(status=JobStatus.QUEUED)
    )
    if moved:
        record_event(job, f"Files validated; job queued on {job.queue}.")
