"""Fair scrubbing (datasets/fairness.py), in-process against PostgreSQL and moto's S3 server:
one org scrubs at most SCRUB_MAX_CONCURRENT_PER_ORG files at once; another of its files is
deferred untouched; other orgs are not affected; a dead worker's claim expires; a hard time
limit rejects the file. tests/datasets_api/test_scrub_fairness_worker.py runs real workers.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from longtune.datasets.fairness import Claim, claim_for_scrubbing, running_scrubs
from longtune.datasets.fairness import scrub_fairness_conf as conf
from longtune.datasets.models import File, FileStatus
from tests.datasets_api.files_helpers import (
    good_upload,
    quarantined_keys,
    s3_files,  # noqa: F401  (fixture, used through pytestmark)
)
from workers.datasets import fail_timed_out, process_file

pytestmark = [pytest.mark.integration, pytest.mark.django_db, pytest.mark.usefixtures("s3_files")]


def uploaded(handle) -> File:
    """Through the real API into quarantine (no commit in this test: no message is sent)."""
    response = handle.client("member").post(
        "/v1/files",
        {"file": SimpleUploadedFile("train.jsonl", good_upload()), "purpose": "fine-tune"},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    return File.objects.for_org(handle.org).get(public_id=response.json()["id"])


def test_second_file_of_a_busy_org_waits_while_another_org_is_claimed(org_a, org_b):
    first, second, other = uploaded(org_a), uploaded(org_a), uploaded(org_b)

    assert claim_for_scrubbing(first) == Claim.CLAIMED
    assert running_scrubs(org_a.org.pk, conf()) == 1
    assert claim_for_scrubbing(second) == Claim.DEFERRED
    assert claim_for_scrubbing(other) == Claim.CLAIMED  # org B is not org A's queue
    second.refresh_from_db()
    assert second.status == FileStatus.UPLOADED and second.processing_started_at is None


def test_deferred_file_keeps_its_raw_bytes_and_is_scrubbed_once_the_slot_frees(org_a):
    busy, waiting = uploaded(org_a), uploaded(org_a)
    assert claim_for_scrubbing(busy) == Claim.CLAIMED

    assert process_file(waiting.pk) == {"file": waiting.public_id, "status": "deferred"}
    waiting.refresh_from_db()
    assert waiting.status == FileStatus.UPLOADED
    assert waiting.raw_key in quarantined_keys(org_a.org)  # nothing was deleted or read

    assert process_file(busy.pk)["status"] == FileStatus.PROCESSED  # the redelivered claim runs
    assert process_file(waiting.pk)["status"] == FileStatus.PROCESSED
    assert quarantined_keys(org_a.org) == []


def test_limit_is_a_setting(settings, org_a):
    settings.SCRUB_MAX_CONCURRENT_PER_ORG = 2
    files = [uploaded(org_a) for _ in range(3)]
    assert [claim_for_scrubbing(f) for f in files] == [
        Claim.CLAIMED,
        Claim.CLAIMED,
        Claim.DEFERRED,
    ]


def test_a_dead_workers_claim_expires_with_the_hard_time_limit(org_a):
    stale, waiting = uploaded(org_a), uploaded(org_a)
    expired = timezone.now() - conf().claim_expires_after - timedelta(seconds=1)
    File.objects.for_org(org_a.org).filter(pk=stale.pk).update(
        status=FileStatus.PROCESSING, processing_started_at=expired
    )
    assert running_scrubs(org_a.org.pk, conf()) == 0
    assert claim_for_scrubbing(waiting) == Claim.CLAIMED


def test_finished_or_deleted_files_are_not_waiting(org_a):
    done = uploaded(org_a)
    assert process_file(done.pk)["status"] == FileStatus.PROCESSED
    done.refresh_from_db()
    assert claim_for_scrubbing(done) == Claim.NOT_WAITING
    assert process_file(done.pk + 10_000) == {"file": done.pk + 10_000, "status": "skipped"}


def test_hard_time_limit_rejects_the_file_with_a_code_and_drops_the_raw_bytes(org_a):
    file = uploaded(org_a)
    assert claim_for_scrubbing(file) == Claim.CLAIMED  # the child that was killed had claimed it

    fail_timed_out(file.pk)  # what ScrubTask.on_failure does in the worker's main process

    file.refresh_from_db()
    assert file.status == FileStatus.ERROR
    assert file.error["code"] == "time_limit_exceeded"
    assert file.raw_key == "" and quarantined_keys(org_a.org) == []
