"""Fine-tuning tasks: train one attempt of a job, and the watchdog that re-queues lost ones.

The train task stays thin: claim the job (longtune.finetuning.lifecycle), fetch data (and the
validation file, whose loss is reported as ``valid_loss``), the artifact of the fine-tuned
model the job starts from (``job.parent_model``, if any) and the newest checkpoint from
object storage, build the TrainConfig, call gpu_runtime.train with
callbacks that stream progress/events/checkpoints into the database, publish the artifact.
A job planned for more than one rank (data × sequence parallel, its memory plan) runs under
torchrun instead (gpu_runtime.launcher), the same callbacks fed from rank 0's JSON lines.

Crash recovery: every checkpoint is uploaded to ``orgs/<org>/jobs/<job>/checkpoints/`` as it
is written, so a NEW worker on another machine (empty local disk) resumes from it. torch is
imported inside the task only: importing this module stays cheap.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from celery.exceptions import TimeLimitExceeded
from django.db import close_old_connections

from longtune.catalog import services as catalog
from longtune.compute import tasks
from longtune.compute.time_limits import (
    TIME_LIMIT_EXCEEDED,
    discard_interrupted_connections,
    is_time_limit,
)
from longtune.finetuning import lifecycle
from longtune.finetuning import services as finetuning_services
from longtune.finetuning.conf import FinetuneConf, finetune_conf
from longtune.finetuning.events import record_event
from longtune.finetuning.models import FineTuningJob
from longtune.finetuning.planning import train_config_for
from longtune.storage import ObjectStorage, get_storage
from workers.celery_app import app
from workers.heartbeat import BackgroundHeartbeat

logger = logging.getLogger("longtune.finetuning")

CANCELLED = "cancelled"
SUPERSEDED = "superseded"
TMP_PREFIX = ".tmp-"  # gpu_runtime.checkpoint ignores (and cleans) directories named like this
PARENT_MODEL_DIR = "parent_model"  # work_dir/<this>/: the artifact of job.parent_model


# --------------------------------------------------------------------------- storage layout


def job_prefix(job: FineTuningJob) -> str:
    return f"orgs/{job.org.public_id}/jobs/{job.public_id}/"


def checkpoint_prefix(job: FineTuningJob, step_dir_name: str) -> str:
    return f"{job_prefix(job)}checkpoints/{step_dir_name}/"


def metrics_key(job: FineTuningJob) -> str:
    return f"{job_prefix(job)}metrics.csv"


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- callbacks


class JobCallbacks:
    """gpu_runtime callbacks → the job's progress, events and checkpoints in the DB/storage."""

    def __init__(
        self, job: FineTuningJob, attempt: int, storage: ObjectStorage, conf: FinetuneConf
    ) -> None:
        self.job, self.attempt, self.storage, self.conf = job, attempt, storage, conf
        self.superseded = False
        self.last_metrics_event = 0.0
        self.step_seconds: float | None = None  # moving average of step wall time
        self.last_step_at: float | None = None
        self.last_progress: dict[str, Any] = {}

    def on_step(self, metrics: Any) -> None:
        from gpu_runtime.callbacks import StopTraining

        now = time.monotonic()
        if self.last_step_at is not None:
            elapsed = now - self.last_step_at
            self.step_seconds = (
                elapsed if self.step_seconds is None else 0.7 * self.step_seconds + 0.3 * elapsed
            )
        self.last_step_at = now
        remaining = metrics.total_steps - metrics.step
        progress = {
            "step": metrics.step,
            "total_steps": metrics.total_steps,
            "loss": round(float(metrics.loss), 6),
            "tokens_per_second": round(float(metrics.tokens_per_second), 1),
            "eta_seconds": round(remaining * self.step_seconds, 1)
            if self.step_seconds is not None
            else None,
            "lr": metrics.lr,
            "epoch": metrics.epoch,
            "trained_tokens": int(getattr(metrics, "trained_tokens", 0)),
        }
        valid_loss = getattr(metrics, "valid_loss", None)
        if valid_loss is not None:
            progress["valid_loss"] = round(float(valid_loss), 6)
        self.last_progress = progress
        control = lifecycle.record_progress(self.job.pk, self.attempt, progress)
        if not control.owned:
            self.superseded = True
            raise StopTraining(SUPERSEDED)
        last = metrics.step == metrics.total_steps
        evaluated = valid_loss is not None  # never throttle away a validation result
        if last or evaluated or now - self.last_metrics_event >= self.conf.metrics_event_seconds:
            self.last_metrics_event = now
            lifecycle.record_metrics_event(self.job, progress)
        if control.cancel:
            raise StopTraining(CANCELLED)

    def on_checkpoint(self, step: int, path: Path) -> None:
        if self.superseded:
            return  # the attempt that replaced us owns the stored checkpoints now
        prefix = checkpoint_prefix(self.job, path.name)
        self.storage.upload_dir(path, prefix)
        metrics_csv = path.parent.parent / "metrics.csv"
        if metrics_csv.is_file():  # so a resume on another machine keeps the early rows
            with metrics_csv.open("rb") as stream:
                self.storage.put(metrics_key(self.job), stream)
        metrics = {
            k: self.last_progress.get(k)
            for k in ("loss", "tokens_per_second", "valid_loss")
            if k in self.last_progress
        }
        if "loss" in metrics:
            metrics["train_loss"] = metrics.pop("loss")
        lifecycle.record_checkpoint(
            self.job, step=step, metrics=metrics, storage_prefix=prefix, size=dir_size(path)
        )
        for old in lifecycle.forget_pruned_checkpoints(self.job, keep=2):
            self.storage.delete_prefix(old)

    def publish_epoch_checkpoint(self, payload: Mapping[str, Any]) -> None:
        """An epoch's servable artifact -> a catalog model named after the checkpoint (kept:
        the newest three); the local copy goes once it is uploaded."""
        path = Path(payload["path"])
        if not self.superseded:
            location = catalog.new_artifact_location(self.job.org.public_id)
            self.storage.upload_dir(path, location.prefix)
            model = catalog.publish_checkpoint_model(
                self.job, step=payload["step"], location=location, artifact_bytes=dir_size(path)
            )
            metrics = {"train_loss": payload.get("loss")}
            if payload.get("valid_loss") is not None:
                metrics["valid_loss"] = payload["valid_loss"]
            lifecycle.record_epoch_checkpoint(
                self.job, step=payload["step"], epoch=payload["epoch"], metrics=metrics, model=model
            )
            catalog.prune_checkpoint_models(self.job)
        shutil.rmtree(path, ignore_errors=True)

    def on_event(self, name: str, payload: Mapping[str, Any]) -> None:
        if name == "resumed":
            record_event(
                self.job,
                f"Resumed from step {payload['step']} (checkpoint {Path(payload['path']).name}).",
                data={"step": payload["step"], "attempt": self.attempt},
            )
        elif name == "data_packed":
            record_event(
                self.job,
                f"Data packed into {payload.get('sequences', '?')} sequences of "
                f"{payload.get('sequence_length', self.job.context_length)} tokens; "
                f"{payload['total_steps']} steps"
                + (
                    f"; {payload['validation_sequences']} validation sequences."
                    if payload.get("validation_sequences")
                    else "."
                ),
                data=_json_safe(payload),
            )
        elif name == "epoch_artifact":
            self.publish_epoch_checkpoint(payload)
        elif name == "model_ready":
            record_event(
                self.job, f"Model loaded; {_layout_sentence(payload)}.", data=_json_safe(payload)
            )
        elif name == "training_started":
            record_event(
                self.job,
                f"Training from step {payload['step']} of {payload['total_steps']}.",
                data=_json_safe(payload),
            )


def _layout_sentence(payload: Mapping[str, Any]) -> str:
    """The layout the run really has (the ``model_ready`` event: what torch.distributed gave
    it), in the memory plan's words (memory_planner.Layout.describe)."""
    world = int(payload.get("world_size") or 1)
    parts = [f"training on {world} rank{'s' if world > 1 else ''}"]
    if int(payload.get("data_parallel") or 1) > 1:
        parts.append(f"data parallel {payload['data_parallel']}")
    if int(payload.get("sequence_parallel") or 1) > 1:
        parts.append(
            f"sequence parallel {payload['sequence_parallel']} "
            f"({payload.get('sequence_parallel_mode')})"
        )
    return ", ".join(parts)


def _json_safe(payload: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(payload), default=str))


# --------------------------------------------------------------------------- preparing


def fetch_training_data(job: FineTuningJob, work_dir: Path, storage: ObjectStorage) -> Path:
    """The scrubbed training file (mixed with the recipe's sources when there is a recipe)."""
    from longtune.datasets.models import File

    target = work_dir / "train.jsonl"
    files = {
        f.public_id: f
        for f in File.objects.for_org(job.org).filter(
            public_id__in=[
                job.training_file_ref,
                *[s["file"] for s in (job.recipe or {}).get("sources", [])],
            ]
        )
    }
    training = files.get(job.training_file_ref)
    if training is None or not training.scrubbed_key:
        raise TrainingInputError(f"training file {job.training_file_ref} is no longer available")
    _download(storage, training.scrubbed_key, target)
    if job.recipe:
        target = apply_recipe(job, target, files, storage, work_dir)
    return target


def fetch_validation_data(
    job: FineTuningJob, work_dir: Path, storage: ObjectStorage
) -> Path | None:
    """The scrubbed validation file, or None when the job has none."""
    from longtune.datasets.models import File

    if not job.validation_file_ref:
        return None
    validation = File.objects.for_org(job.org).filter(public_id=job.validation_file_ref).first()
    if validation is None or not validation.scrubbed_key:
        raise TrainingInputError(
            f"validation file {job.validation_file_ref} is no longer available"
        )
    target = work_dir / "validation.jsonl"
    _download(storage, validation.scrubbed_key, target)
    return target


class TrainingInputError(RuntimeError):
    """The job's inputs are gone or unusable (fail the job with code invalid_training_data)."""


INSUFFICIENT_WORKER_CAPACITY = "insufficient_worker_capacity"


class WorkerCapacityError(RuntimeError):
    """The job's planned layout needs more processes than this worker may start (a pool whose
    settings promise more devices per job than its machines have): fail with
    INSUFFICIENT_WORKER_CAPACITY instead of launching a run that cannot be what was planned."""


def worker_world_size(conf: FinetuneConf) -> int:
    """How many training processes this worker may start for one job: its visible CUDA
    devices (one rank each), or on CPU ``FINETUNE_LOCAL_WORLD_SIZE`` gloo processes."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return conf.local_world_size


def launch_world_size(config: Any, available: int) -> int:
    """The processes to start for ``config`` (its planned data × sequence ranks; 1 when it
    was not planned), refusing more than ``available``."""
    world = config.world_size or 1
    if world > available:
        raise WorkerCapacityError(
            f"the job was planned for {world} ranks ({config.data_parallel} data x "
            f"{config.sequence_parallel} sequence parallel); this worker may start {available} "
            "(FINETUNE_LOCAL_WORLD_SIZE on CPU, its visible CUDA devices on GPU)"
        )
    return world


def _download(storage: ObjectStorage, key: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with storage.open(key) as src, target.open("wb") as out:
        shutil.copyfileobj(src, out, 1024 * 1024)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def apply_recipe(
    job: FineTuningJob, training_path: Path, files: dict, storage: ObjectStorage, work_dir: Path
) -> Path:
    """datasets.recipes mixture of the training file and the recipe's sources, by weight."""
    from longtune.datasets.recipes import Recipe, RecipeSource, run_recipe, whitespace_token_count

    recipe = job.recipe
    sources = []
    if recipe["training_file_weight"] > 0:
        sources.append(
            RecipeSource(
                job.training_file_ref, recipe["training_file_weight"], _read_jsonl(training_path)
            )
        )
    for index, source in enumerate(recipe["sources"]):
        file = files.get(source["file"])
        if file is None or not file.scrubbed_key:
            raise TrainingInputError(f"recipe source {source['file']} is no longer available")
        path = work_dir / f"source-{index}.jsonl"
        _download(storage, file.scrubbed_key, path)
        sources.append(
            RecipeSource(f"{source['file']}#{index}", source["weight"], _read_jsonl(path))
        )
    mixture = Recipe(
        name=f"{job.public_id}-recipe",
        sources=tuple(sources),
        seed=int(job.seed),
        min_tokens=recipe["min_tokens"],
        deduplicate=recipe["deduplicate"],
    )
    examples, report = run_recipe(mixture, count_tokens=whitespace_token_count)
    mixed = work_dir / "mixed.jsonl"
    with mixed.open("w", encoding="utf-8") as out:
        for example in examples:
            out.write(json.dumps(example) + "\n")
    record_event(job, f"Recipe mixed {report.kept} examples.", data=report.to_dict())
    if report.kept == 0:
        raise TrainingInputError("the recipe kept no examples")
    return mixed


def restore_checkpoint_from_storage(
    job: FineTuningJob, checkpoints_dir: Path, storage: ObjectStorage
) -> int | None:
    """Download the newest stored checkpoint when the local disk has nothing as recent
    (another machine, or a wiped disk). Returns the step downloaded, if any."""
    from gpu_runtime.checkpoint import latest_checkpoint, step_dir_name

    stored = lifecycle.latest_stored_checkpoint(job)
    if stored is None:
        return None
    local = latest_checkpoint(checkpoints_dir)
    local_step = int(local.name.split("-")[-1]) if local is not None else -1
    if local_step >= stored.step:
        return None
    final = checkpoints_dir / step_dir_name(stored.step)
    tmp = checkpoints_dir / f"{TMP_PREFIX}download-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    storage.download_dir(stored.storage_prefix, tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)  # appears complete or not at all, like gpu_runtime's own writes
    metrics = checkpoints_dir.parent / "metrics.csv"
    if storage.exists(metrics_key(job)):
        _download(storage, metrics_key(job), metrics)
    return stored.step


def fetch_parent_model(job: FineTuningJob, work_dir: Path, storage: ObjectStorage) -> Path | None:
    """The artifact of the fine-tuned model the job starts from (``job.parent_model``),
    downloaded from object storage like a checkpoint (once per machine: a resumed attempt on
    the same disk reuses it); None when the job starts from its base model."""
    if job.parent_model_id is None:
        return None
    parent = job.parent_model
    if parent is None or parent.deleted_at is not None or not parent.artifact_prefix:
        raise TrainingInputError(f"the model the job starts from ({job.model_name}) was deleted")
    target = work_dir / PARENT_MODEL_DIR
    if (target / "config.json").is_file():
        return target
    tmp = work_dir / f"{TMP_PREFIX}{PARENT_MODEL_DIR}"
    shutil.rmtree(tmp, ignore_errors=True)
    storage.download_dir(parent.artifact_prefix, tmp)
    if not (tmp / "config.json").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise TrainingInputError(
            f"the artifact of the model the job starts from ({parent.name}) is missing"
        )
    os.replace(tmp, target)  # appears complete or not at all
    return target


# --------------------------------------------------------------------------- publishing


def publish_model(
    job: FineTuningJob, artifact_dir: Path, output_dir: Path, storage: ObjectStorage
) -> tuple[str, Any]:
    """Upload the artifact, then report it: the catalog creates the model and result rows."""
    location = catalog.new_artifact_location(job.org.public_id)
    storage.upload_dir(artifact_dir, location.prefix)
    published = catalog.publish_fine_tuned_model(
        job,
        location=location,
        artifact_bytes=dir_size(artifact_dir),
        metrics_csv=(output_dir / "metrics.csv").read_bytes(),
    )
    return published.model.name, published.results_file


# --------------------------------------------------------------------------- the task


def run_training_attempt(job_pk: int, attempt: int, worker: str) -> dict[str, Any]:
    job = lifecycle.claim(job_pk, attempt, worker)
    if job is None:
        logger.info("job %s attempt %s: stale or finished, skipping", job_pk, attempt)
        return {"job": job_pk, "attempt": attempt, "skipped": True}
    conf = finetune_conf()
    storage = get_storage()
    work_dir = conf.work_dir / job.public_id
    output_dir = work_dir / "output"
    callbacks = JobCallbacks(job, attempt, storage, conf)
    with BackgroundHeartbeat(
        partial(lifecycle.heartbeat, job.pk, attempt),
        every_seconds=conf.heartbeat_seconds,
        name=f"heartbeat-{job.pk}",
    ):
        try:
            result = _train(job, work_dir, output_dir, storage, conf, callbacks)
        except TrainingInputError as exc:
            lifecycle.finish_failed(job.pk, attempt, code="invalid_training_data", message=str(exc))
            return {"job": job.public_id, "status": "failed"}
        except WorkerCapacityError as exc:
            lifecycle.finish_failed(
                job.pk, attempt, code=INSUFFICIENT_WORKER_CAPACITY, message=str(exc)
            )
            return {"job": job.public_id, "status": "failed"}
        except Exception as exc:
            if is_time_limit(exc):  # raised here, or inside a library that wrapped it (boto's S3)
                logger.warning("job %s attempt %s hit its soft time limit", job.public_id, attempt)
                discard_interrupted_connections()  # it may have landed mid-query
                lifecycle.finish_failed(
                    job.pk,
                    attempt,
                    code=TIME_LIMIT_EXCEEDED,
                    message="Training ran past the time limit of GPU work "
                    "(GPU_WORK_TIME_LIMIT_SECONDS).",
                )
                return {"job": job.public_id, "status": "failed"}
            logger.exception("job %s attempt %s failed", job.public_id, attempt)
            lifecycle.finish_failed(
                job.pk, attempt, code="training_failed", message=f"{type(exc).__name__}: {exc}"
            )
            return {"job": job.public_id, "status": "failed"}
        return _record_outcome(job, attempt, result, output_dir, storage, work_dir)


def _train(job, work_dir, output_dir, storage, conf, callbacks):
    """Fetch, configure, train: in this process when the plan has one rank, else under
    torchrun (gpu_runtime.launcher) with the same ``callbacks`` fed from rank 0's records."""
    data_path = fetch_training_data(job, work_dir, storage)
    validation_path = fetch_validation_data(job, work_dir, storage)
    parent_dir = fetch_parent_model(job, work_dir, storage)
    if parent_dir is not None:
        record_event(
            job,
            f"Starting from the weights of {job.parent_model.name}.",
            data={"parent_model": job.parent_model.name},
        )
    config = train_config_for(
        job,
        output_dir=str(output_dir),
        checkpoint_every_steps=conf.checkpoint_every_steps,
        eval_every_steps=conf.eval_every_steps,
        parent_model=str(parent_dir) if parent_dir is not None else None,
    )
    world = launch_world_size(config, worker_world_size(conf))
    downloaded = restore_checkpoint_from_storage(job, config.checkpoints_dir, storage)
    if downloaded is not None:
        record_event(job, f"Downloaded checkpoint of step {downloaded} from object storage.")
    eval_data = str(validation_path) if validation_path is not None else None
    if world == 1:
        from gpu_runtime.train import train

        return train(config, str(data_path), [callbacks], eval_data=eval_data)
    from gpu_runtime.launcher import LaunchSpec, launch

    def started(pid: int) -> None:
        record_event(
            job,
            f"Launched {world} training processes (torchrun, pid {pid}).",
            data={"world_size": world, "torchrun_pid": pid},
        )

    return launch(
        config,
        data_path,
        [callbacks],
        LaunchSpec(world_size=world, work_dir=work_dir / "launch"),
        eval_data=eval_data,
        on_started=started,
    )


def _record_outcome(job, attempt, result, output_dir, storage, work_dir) -> dict[str, Any]:
    if result.stop_reason == SUPERSEDED:
        return {"job": job.public_id, "status": SUPERSEDED}
    if result.status == "stopped":
        lifecycle.finish_cancelled(
            job.pk, attempt, trained_tokens=result.trained_tokens, step=result.steps
        )
        shutil.rmtree(work_dir, ignore_errors=True)
        return {"job": job.public_id, "status": "cancelled", "steps": result.steps}
    name, metrics_file = publish_model(job, result.artifact_dir, output_dir, storage)
    finished = lifecycle.finish_succeeded(
        job.pk,
        attempt,
        trained_tokens=result.trained_tokens,
        fine_tuned_model=name,
        metrics_file=metrics_file,
        steps=result.steps,
    )
    shutil.rmtree(work_dir, ignore_errors=True)
    # the job's ``evaluation`` option: evaluate the new model (an evaluation job of its own)
    evaluation = finetuning_services.evaluate_fine_tuned_model(job.pk) if finished else None
    return {
        "job": job.public_id,
        "status": "succeeded",
        "fine_tuned_model": name,
        "evaluation": evaluation,
    }


class TrainTask(app.Task):
    """The training task's hard-time-limit hook: called with ``TimeLimitExceeded`` by the
    prefork pool's parent after it killed the child, and by the solo pool's watchdog
    (workers/time_limits.py) before it ends the process. Fails the attempt through the
    lifecycle, so neither a redelivered message nor the watchdog runs it again."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:  # noqa: ANN001 - Celery's
        if isinstance(exc, TimeLimitExceeded) and len(args) >= 2:
            lifecycle.finish_failed(
                int(args[0]),
                int(args[1]),
                code=TIME_LIMIT_EXCEEDED,
                message="Training ran past the hard time limit of GPU work "
                "(GPU_WORK_TIME_LIMIT_SECONDS + TASK_HARD_TIME_LIMIT_GRACE_SECONDS) and was stopped.",
            )


@app.task(name=tasks.TRAIN, base=TrainTask, bind=True, acks_late=True, reject_on_worker_lost=True)
def train_job(self, job_pk: int, attempt: int) -> dict[str, Any]:
    close_old_connections()
    try:
        return run_training_attempt(job_pk, attempt, worker=self.request.hostname or "worker")
    finally:
        close_old_connections()


# --------------------------------------------------------------------------- watchdog


def run_watchdog(stale_after_seconds: float | None = None) -> list[str]:
    """Re-queue running jobs whose worker went silent; returns the re-queued job ids."""
    conf = finetune_conf()
    seconds = conf.stale_after_seconds if stale_after_seconds is None else stale_after_seconds
    requeued = lifecycle.requeue_stale_jobs(
        stale_after=timedelta(seconds=seconds), max_attempts=conf.max_attempts
    )
    for item in requeued:
        lifecycle.JOBS.publish(item.pk, item.attempt, item.queue)
        logger.warning("re-queued %s as attempt %s on %s", item.public_id, item.attempt, item.queue)
    return [item.public_id for item in requeued]


@app.task(name=tasks.FINETUNE_WATCHDOG)  # task_default_queue: cpu
def watchdog() -> dict[str, Any]:
    return {"requeued": run_watchdog()}
