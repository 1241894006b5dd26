"""Evaluation tasks: run one attempt of an evaluation job, and the watchdog that re-queues lost ones.

Thin, like the training task: claim through ``evaluation.lifecycle.EVALUATIONS`` (fenced by
the attempt), load the model (a base, or a fine-tune's artifact with the RoPE scaling it was
trained under), run the suite of ``gpu_runtime.context_eval`` with a progress callback that
heartbeats and reads the cancel flag, report the results (and the heatmap) back, finish. torch
is imported inside the task only.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.db import close_old_connections

from longtune.catalog.resolution import serves_as_adapter
from longtune.compute import tasks
from longtune.compute.models import WorkStatus
from longtune.compute.time_limits import TIME_LIMIT_EXCEEDED, discard_interrupted_connections
from longtune.evaluation.lifecycle import EVALUATIONS, record_event
from longtune.evaluation.models import EvaluationJob, Suite
from longtune.evaluation.services import save_heatmap
from longtune.finetuning.conf import finetune_conf
from longtune.storage import get_storage
from workers.celery_app import app

logger = logging.getLogger("longtune.evaluation")


class Cancelled(Exception):
    pass


class Superseded(Exception):
    pass


def load_model(job: EvaluationJob, work_dir: Path) -> tuple[Any, Any]:
    """(model, tokenizer) for the job's model, in eval mode."""
    from gpu_runtime.output import load_trained_model
    from gpu_runtime.registry import load_model as load_base
    from gpu_runtime.registry import load_tokenizer

    fine_tuned = job.fine_tuned_model
    if fine_tuned is None:
        location = job.base_model.location
        return load_base(location).eval(), load_tokenizer(location)
    artifact = work_dir / "artifact"
    get_storage().download_dir(fine_tuned.artifact_prefix, artifact)
    base = job.base_model.location if serves_as_adapter(fine_tuned) else None
    model, tokenizer = load_trained_model(artifact, base_model=base)
    return model.eval(), tokenizer


def run_suite(job: EvaluationJob, model: Any, tokenizer: Any, progress) -> dict[str, Any]:
    from gpu_runtime import context_eval

    if job.suite == Suite.PASSKEY:
        grid = context_eval.passkey_grid(
            model, tokenizer, job.lengths, job.depths, job.samples, job.seed, progress
        )
        grid["effective_context"] = context_eval.effective_context(
            grid["lengths"], grid["by_length"]
        )
        return grid
    if job.suite == Suite.RULER:
        grid = context_eval.ruler_grid(
            model, tokenizer, job.tasks, job.lengths, job.samples, job.seed, progress
        )
        grid["effective_context"] = context_eval.effective_context(
            grid["lengths"], grid["by_length"]
        )
        return grid
    ids = context_eval.long_text_ids(tokenizer, max(job.lengths))
    return context_eval.perplexity_by_length(model, ids, job.lengths, progress)


def _progress_callback(job: EvaluationJob, attempt: int):
    def report(done: int, total: int) -> None:
        control = EVALUATIONS.record_progress(
            job.pk, attempt, {"done": done, "total": total, "fraction": done / total}
        )
        if not control.owned:
            raise Superseded()
        if control.cancel:
            raise Cancelled()

    return report


def _heatmap(job: EvaluationJob, results: dict[str, Any], work_dir: Path):
    from gpu_runtime.context_eval import heatmap_png, ruler_heatmap_png

    if job.suite == Suite.RULER:
        path = ruler_heatmap_png(results, work_dir / "heatmap.png", f"{job.model}: RULER score")
    else:
        path = heatmap_png(results, work_dir / "heatmap.png", f"{job.model}: passkey accuracy")
    return save_heatmap(job, path.read_bytes())


def run_evaluation_attempt(job_pk: int, attempt: int, worker: str) -> dict[str, Any]:
    job = EVALUATIONS.claim(job_pk, attempt, worker)
    if job is None:
        return {"evaluation": job_pk, "attempt": attempt, "skipped": True}
    work_dir = Path(tempfile.mkdtemp(prefix=f"{job.public_id}-"))
    try:
        model, tokenizer = load_model(job, work_dir)
        record_event(job, "Model loaded.")
        results = run_suite(job, model, tokenizer, _progress_callback(job, attempt))
        fields: dict[str, Any] = {"results": results}
        if job.suite in (Suite.PASSKEY, Suite.RULER):
            fields["result_file"] = _heatmap(job, results, work_dir)
        summary = (
            "perplexity " + ", ".join(f"{p:.2f}" for p in results["perplexity"])
            if job.suite == Suite.PERPLEXITY
            else f"overall {'accuracy' if job.suite == Suite.PASSKEY else 'score'} "
            f"{results['overall']:.2f}"
        )
        EVALUATIONS.finish(
            job.pk,
            attempt,
            WorkStatus.SUCCEEDED,
            messages=[f"Evaluation done: {summary}."],
            **fields,
        )
        return {"evaluation": job.public_id, "status": "succeeded"}
    except Cancelled:
        EVALUATIONS.finish(
            job.pk, attempt, WorkStatus.CANCELLED, messages=["Evaluation cancelled."]
        )
        return {"evaluation": job.public_id, "status": "cancelled"}
    except Superseded:
        logger.warning("%s attempt %s superseded; stopping", job.public_id, attempt)
        return {"evaluation": job.public_id, "status": "superseded"}
    except SoftTimeLimitExceeded:
        logger.warning("evaluation %s attempt %s hit its soft time limit", job.public_id, attempt)
        discard_interrupted_connections()  # it may have landed mid-query
        EVALUATIONS.finish_failed(
            job.pk,
            attempt,
            code=TIME_LIMIT_EXCEEDED,
            message="The evaluation ran past the time limit of GPU work (GPU_WORK_TIME_LIMIT_SECONDS).",
        )
        return {"evaluation": job.public_id, "status": "failed"}
    except Exception as exc:  # noqa: BLE001 - any failure of the run becomes a coded failure
        logger.exception("evaluation %s failed", job.public_id)
        EVALUATIONS.finish_failed(
            job.pk, attempt, code="evaluation_failed", message=f"{type(exc).__name__}: {exc}"
        )
        return {"evaluation": job.public_id, "status": "failed"}
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


class EvaluateTask(app.Task):
    """The evaluation task's hard-time-limit hook (see workers.finetuning.TrainTask)."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:  # noqa: ANN001 - Celery's
        if isinstance(exc, TimeLimitExceeded) and len(args) >= 2:
            EVALUATIONS.finish_failed(
                int(args[0]),
                int(args[1]),
                code=TIME_LIMIT_EXCEEDED,
                message="The evaluation ran past the hard time limit of GPU work and was stopped.",
            )


@app.task(
    name=tasks.EVALUATE, base=EvaluateTask, bind=True, acks_late=True, reject_on_worker_lost=True
)
def run_evaluation(self, evaluation_pk: int, attempt: int) -> dict[str, Any]:
    close_old_connections()
    worker = self.request.hostname or f"{socket.gethostname()}:{os.getpid()}"
    return run_evaluation_attempt(evaluation_pk, attempt, worker)


@app.task(name=tasks.EVALUATION_WATCHDOG)  # task_default_queue: cpu
def watchdog() -> dict[str, Any]:
    """Silent running evaluations are re-queued (a new attempt) on the fine-tuning knobs."""
    conf = finetune_conf()
    requeued = EVALUATIONS.requeue_stale(
        stale_after=timedelta(seconds=conf.stale_after_seconds), max_attempts=conf.max_attempts
    )
    for item in requeued:
        EVALUATIONS.publish(item.pk, item.attempt, item.queue)
    return {"requeued": [item.public_id for item in requeued]}
