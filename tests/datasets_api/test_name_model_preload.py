"""The person-name model is loaded when a scrubbing worker process starts, not on a file.

Real worker processes (the cpu worker exactly as scripts/run.sh runs it: prefork, two
slots), Redis, PostgreSQL and moto's S3 server. What is asserted is an order of events, not a
duration: each child logs the preload from Celery's ``worker_process_init``, and the scrub of
the first file logs whether the model was already loaded in its process when it began.
"""

from __future__ import annotations

import json
import re

import pytest

from longtune.datasets.models import File, FileStatus
from longtune.storage import get_storage
from tests.datasets_api.files_helpers import chat, jsonl
from tests.datasets_api.test_scrub_fairness_worker import shared_storage, status, upload
from tests.finetuning.conftest import wait_for
from tests.fixtures.services import EMBEDDED_CPU_WORKER, NAME_MODEL_PRELOADED

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
__all__ = ["shared_storage"]  # the fixture, imported for this module's tests

PRELOADED = re.compile(r"name model preloaded at worker start in [\d.]+ s \(pid (\d+)\)")


def preloaded_pids(worker) -> set[str]:
    return set(PRELOADED.findall(worker.read_log()))


def names_upload() -> bytes:
    rows = [chat("Hi, my name is Priya Raman and my invoice is wrong.", "Sorry, Priya Raman!")]
    rows += [chat(f"Question {i}: how long is a context?", f"Answer {i}: long.") for i in range(11)]
    return jsonl(rows)


def scrub_line(worker, file: File) -> str:
    lines = [
        line for line in worker.read_log().splitlines() if f"scrubbed {file.public_id} " in line
    ]
    assert len(lines) == 1, worker.read_log()[-3000:]
    return lines[0]


def wait_processed(file: File, worker) -> File:
    wait_for(
        lambda: status(file) in (FileStatus.PROCESSED, FileStatus.ERROR),
        timeout=120,
        what=f"{file.public_id} to be scrubbed",
        worker=worker,
    )
    row = File.objects.unscoped_across_orgs().get(pk=file.pk)
    assert row.status == FileStatus.PROCESSED, row.error
    return row


def test_each_scrubbing_process_loads_the_name_model_before_its_first_file(
    make_org, start_worker, shared_storage
):
    handle = make_org("Names Preload", plan="pro")
    worker = start_worker(**EMBEDDED_CPU_WORKER)
    worker.wait_for_log(NAME_MODEL_PRELOADED, count=EMBEDDED_CPU_WORKER["concurrency"])
    pids = preloaded_pids(worker)
    assert len(pids) == 2  # one load in each child process
    file = upload(handle, names_upload(), "names.jsonl")
    row = wait_processed(file, worker)

    line = scrub_line(worker, row)
    assert "name model: loaded before this file" in line, line
    assert re.search(r"\(pid (\d+)\)", line).group(1) in pids  # a child that had preloaded it
    scrubbed = get_storage().open(row.scrubbed_key).read().decode()
    first = json.loads(scrubbed.splitlines()[0])
    assert first["messages"][1]["content"] == "Hi, my name is [PERSON_1] and my invoice is wrong."
    assert "Priya" not in scrubbed
    assert row.report["pii"]["person_names"] == "scrubbed"


def test_without_the_setting_the_first_file_loads_it_and_other_workers_never_do(
    make_org, start_worker, shared_storage
):
    handle = make_org("Names Lazy", plan="pro")
    # consumes no cpu queue: never scrubs, never loads spaCy, whatever the setting says
    trainer = start_worker("gpu", SCRUB_PRELOAD_NAME_MODEL="true")
    lazy = start_worker("cpu", SCRUB_PRELOAD_NAME_MODEL="false")
    file = upload(handle, names_upload(), "names.jsonl")
    row = wait_processed(file, lazy)

    assert "name model: loaded by this file" in scrub_line(lazy, row)
    assert not PRELOADED.search(lazy.read_log())
    assert not PRELOADED.search(trainer.read_log())  # its pool started before "ready."
