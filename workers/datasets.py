"""The scrub + validate task (``cpu`` queue): raw upload in quarantine -> scrubbed JSONL.

One streaming pass (datasets.validation.validate_and_scrub) decompresses, validates every
line, replaces PII and counts tokens, writing valid examples to a local temp file. Only when
the whole file is valid is that file stored as ``orgs/<org>/files/<id>/scrubbed.jsonl``;
otherwise nothing is kept and the File carries a coded error with line numbers.

Retention of raw bytes is zero: the quarantine object is deleted in a ``finally`` whatever
happened. The task is idempotent under redelivery (acks_late): a file already processed or
rejected is left alone except for finishing that deletion.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from typing import Any

from celery import signals
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings
from django.utils import timezone

from longtune.compute import tasks
from longtune.compute.queues import CPU
from longtune.compute.time_limits import (
    TIME_LIMIT_EXCEEDED,
    TaskKind,
    discard_interrupted_connections,
    is_time_limit,
    limit_for_kind,
)
from longtune.datasets.fairness import Claim, claim_for_scrubbing, scrub_fairness_conf
from longtune.datasets.models import File, FileStatus
from longtune.datasets.policies import dataset_limits_for, pii_policy_for
from longtune.datasets.services import scrubbed_key
from longtune.datasets.tokenizer_source import TokenCounter, default_counter
from longtune.datasets.validation import ProcessingReport, validate_and_scrub
from longtune.storage import ObjectNotFound, get_storage
from longtune.tenancy import audit
from workers.celery_app import app

logger = logging.getLogger("longtune.datasets")

# The training model is unknown at upload time: tokens are counted with the default base
# model's tokenizer (datasets.tokenizer_source), or estimated from bytes when no tokenizer is
# registered. GET /v1/files/{id}/token_stats recounts with any chosen model.
# Codes this task adds to the dataset error codes (datasets.errors.ERROR_CODES) for failures
# that are not the data's fault.
UPLOAD_MISSING = "upload_missing"
PROCESSING_FAILED = "processing_failed"
# ...and TIME_LIMIT_EXCEEDED (compute.time_limits): the scrub ran past its time limit.
TERMINAL = (FileStatus.PROCESSED, FileStatus.ERROR)


def token_count_method(counter: TokenCounter) -> str:
    if counter.is_estimate:
        return (
            f"{counter.name}; no base model tokenizer could be loaded, exact counts are computed "
            "when a fine-tuning job tokenizes the file"
        )
    return (
        f"tokenizer of the default base model '{counter.name}'; "
        "GET /v1/files/{id}/token_stats?model=... counts with another model"
    )


@signals.worker_process_init.connect
def preload_name_model(**_: Any) -> str:
    """Load the person-name model when a worker process that scrubs starts, not on a file.

    Why: importing spaCy (and torch through thinc) and reading en_core_web_sm takes seconds,
    which the first file with names on would otherwise spend inside its time limit, and a
    user waits for. Sent in each prefork child (and once by the solo pool); only a worker
    consuming the ``cpu`` queue loads it (training and serving workers never scrub), and only
    when ``SCRUB_PRELOAD_NAME_MODEL`` is on. Returns what it did (the log says it too).
    """
    if not settings.SCRUB_PRELOAD_NAME_MODEL:
        return "disabled"
    if CPU not in app.amqp.queues.consume_from:
        return "not_a_scrubbing_worker"
    from longtune.datasets.pii_names import installed_name_detector

    started = time.monotonic()
    try:
        detector = installed_name_detector()
    except Exception:  # the worker must start anyway: the first file then loads (or reports) it
        logger.exception("could not preload the name model; files will load it")
        return "failed"
    if detector is None:
        logger.warning("no name model installed: files are scrubbed without person names")
        return "not_installed"
    logger.info(
        "name model preloaded at worker start in %.1f s (pid %d)",
        time.monotonic() - started,
        os.getpid(),
    )
    return "preloaded"


class ScrubTask(app.Task):
    """The scrub task's failure hook: a HARD time limit kills the prefork child before the task
    can say anything, so the worker's main process rejects the file here (Celery calls
    ``on_failure`` for hard timeouts) and deletes the raw bytes."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:  # noqa: ANN001 - Celery's
        if isinstance(exc, TimeLimitExceeded) and args:
            fail_timed_out(int(args[0]))


@app.task(name=tasks.SCRUB_FILE, base=ScrubTask, bind=True, acks_late=True)  # sent to "cpu"
def scrub_file(self, file_pk: int) -> dict[str, Any]:
    """Celery entry point; see process_file. A file whose org already scrubs its share of the
    cpu slots (datasets/fairness.py) goes back to the broker for ``defer_seconds``."""
    result = process_file(file_pk)
    if result["status"] == Claim.DEFERRED and not self.request.is_eager:
        conf = scrub_fairness_conf()
        logger.info(
            "%s: its org is at its limit of concurrent scrubs (%s); retrying in %ss",
            result["file"],
            conf.max_concurrent_per_org,
            conf.defer_seconds,
        )
        raise self.retry(countdown=conf.defer_seconds, max_retries=None)
    return result


def process_file(file_pk: int) -> dict[str, Any]:
    """Scrub and validate one uploaded file; returns {"file", "status"} for the task result.

    "deferred": the org is at its concurrent-scrub limit; the file is untouched (still
    uploaded, raw bytes kept) and the caller tries again later.
    """
    file = (
        File.objects.unscoped_across_orgs()
        .select_related("org", "uploaded_by_key__created_by")
        .filter(pk=file_pk)
        .first()
    )
    if file is None:  # deleted meanwhile
        return {"file": file_pk, "status": "skipped"}
    claim = claim_for_scrubbing(file)
    if claim == Claim.DEFERRED:
        return {"file": file.public_id, "status": Claim.DEFERRED}
    try:
        if file.status in TERMINAL:  # redelivered after it finished: only retention is left
            return {"file": file.public_id, "status": "skipped"}
        return {"file": file.public_id, "status": _scrub(file)}
    finally:
        _delete_raw(file)


def fail_timed_out(file_pk: int) -> None:
    """Reject a file whose scrub was killed by its hard time limit; drop its raw bytes."""
    file = (
        File.objects.unscoped_across_orgs()
        .select_related("org", "uploaded_by_key__created_by")
        .filter(pk=file_pk)
        .first()
    )
    if file is None:
        return
    try:
        _reject(file, _time_limit_error())
    finally:
        _delete_raw(file)


def _time_limit_error() -> dict[str, Any]:
    return _single_error(
        TIME_LIMIT_EXCEEDED,
        "Processing took longer than the scrubbing time limit; split the file and upload the parts.",
    )


def _scrub(file: File) -> str:
    storage = get_storage()
    try:
        raw = storage.open(file.raw_key)
    except ObjectNotFound:
        return _reject(file, _single_error(UPLOAD_MISSING, "The uploaded bytes are missing."))
    started = time.monotonic()
    try:
        counter = default_counter(file.org)
        policy = pii_policy_for(file.org)
        name_model = _name_model_state(policy)
        with raw, tempfile.TemporaryFile() as scrubbed:
            report = validate_and_scrub(
                raw,
                scrubbed,
                policy,
                dataset_limits_for(file.org),
                count_tokens=_within_time_limit(counter.count, started),
            )
            logger.info(
                "scrubbed %s in %.2f s (pid %d); name model: %s",
                file.public_id,
                time.monotonic() - started,
                os.getpid(),
                name_model if name_model != "not_loaded" else "loaded by this file",
            )
            if not report.valid:
                return _reject(file, _error_from_report(report), report, counter)
            scrubbed.seek(0)
            return _accept(file, scrubbed, report, counter)
    except Exception as exc:
        if is_time_limit(exc):  # raised here, or wrapped by a library (boto's S3 calls)
            logger.warning("processing %s hit its soft time limit", file.public_id)
            discard_interrupted_connections()  # it may have landed mid-query
            return _reject(file, _time_limit_error())
        logger.exception("processing %s failed", file.public_id)
        return _reject(
            file,
            _single_error(PROCESSING_FAILED, "Processing failed on our side; upload it again."),
        )


def _name_model_state(policy) -> str:
    """Before a scrub: "loaded before this file" (preloaded or by an earlier file),
    "not used" (the org's policy leaves PERSON out), or "not_loaded" (this file loads it)."""
    from longtune.datasets.pii import PERSON

    if PERSON not in policy.entities:
        return "not used (policy)"
    from longtune.datasets.pii_names import model_loaded

    return "loaded before this file" if model_loaded() else "not_loaded"


def _within_time_limit(count, started: float):
    """``count`` (called once per example) that also enforces the scrub's soft time limit.

    Why, next to Celery's signal: the signal fires once, wherever the task is, and a library
    that catches ``Exception`` around an import or a load (a first file pays for spaCy, torch
    and the tokenizer) can swallow it -- the scrub then ran on with no limit at all. The
    loop's own check cannot be swallowed that way."""
    limit = limit_for_kind(TaskKind.SCRUB)
    if limit is None:
        return count
    deadline = started + limit.soft_seconds

    def counted(text: str) -> int:
        if time.monotonic() > deadline:
            raise SoftTimeLimitExceeded("soft time limit exceeded (checked by the scrub loop)")
        return count(text)

    return counted


def _accept(file: File, scrubbed, report: ProcessingReport, counter: TokenCounter) -> str:
    key = scrubbed_key(file.org, file.public_id)
    size = get_storage().put(key, scrubbed)
    body = _report_dict(report, counter)
    _delete_raw(file)  # before the status: a processed or rejected file has no raw bytes left
    updated = (
        File.objects.unscoped_across_orgs()
        .filter(pk=file.pk, status=FileStatus.PROCESSING)
        .update(
            status=FileStatus.PROCESSED,
            scrubbed_key=key,
            scrubbed_bytes=size,
            format=str(report.format),
            num_examples=report.examples,
            num_tokens=report.token_stats.tokens,
            report=body,
            error=None,
            processed_at=timezone.now(),
        )
    )
    if not updated:  # deleted (or finished by another delivery) while we worked
        get_storage().delete(key)
        return "skipped"
    _audit(file, "file.scrubbed", {"examples": report.examples, "pii": body["pii"]["counts"]})
    return FileStatus.PROCESSED


def _reject(
    file: File,
    error: dict[str, Any],
    report: ProcessingReport | None = None,
    counter: TokenCounter | None = None,
) -> str:
    _delete_raw(file)
    updated = (
        File.objects.unscoped_across_orgs()
        .filter(pk=file.pk, status=FileStatus.PROCESSING)
        .update(
            status=FileStatus.ERROR,
            error=error,
            report=_report_dict(report, counter) if report else {},
            processed_at=timezone.now(),
        )
    )
    if updated:
        _audit(file, "file.rejected", {"code": error["code"], "line": error["line"]})
    return FileStatus.ERROR if updated else "skipped"


def _delete_raw(file: File) -> None:
    """Retention 0: the quarantine object goes, whatever happened above."""
    if not file.raw_key:
        return
    try:
        get_storage().delete(file.raw_key)
    except Exception:
        # Leave raw_key set: a redelivery (or the sweeper) deletes it later.
        logger.exception("could not delete the raw upload of %s", file.public_id)
        raise
    File.objects.unscoped_across_orgs().filter(pk=file.pk).update(raw_key="")
    file.raw_key = ""


# --- report shapes ----------------------------------------------------------------------------


def _report_dict(report: ProcessingReport, counter: TokenCounter | None) -> dict[str, Any]:
    body = report.to_dict()
    if body.get("token_stats") is not None and counter is not None:
        body["token_stats"]["tokenizer"] = counter.name
        body["token_stats"]["method"] = token_count_method(counter)
    return body


def _error_from_report(report: ProcessingReport) -> dict[str, Any]:
    """File.error: the error that decided (the fatal one, else the first), plus the list."""
    first = report.fatal or report.errors[0]
    return {
        "code": first.code,
        "message": first.message,
        "line": first.line,
        "param": first.param,
        "errors": [e.to_dict() for e in report.errors],
        "error_counts": dict(report.error_counts),
    }


def _single_error(code: str, message: str) -> dict[str, Any]:
    error = {"code": code, "message": message, "line": None, "param": None}
    return {**error, "errors": [error], "error_counts": {code: 1}}


def _audit(file: File, action: str, metadata: dict[str, Any]) -> None:
    audit.record(
        org=file.org,
        action=action,
        target=file,
        actor_api_key=file.uploaded_by_key,
        metadata={"file": file.public_id, **metadata},
    )
