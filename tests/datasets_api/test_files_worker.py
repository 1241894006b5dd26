"""End to end with every real part: the official `openai` client -> a live LongTune server ->
moto's S3 server -> Redis -> a real Celery worker process -> PostgreSQL.
"""

from __future__ import annotations

import time

import openai
import pytest

from longtune.datasets.models import File, FileStatus
from longtune.storage import get_storage
from tests.conftest import openai_client as make_openai_client
from tests.datasets_api.files_helpers import (
    BAD_FILES,
    RAW_SECRETS,
    good_upload,
    gzip_bytes,
    quarantined_keys,
    stored_keys,
    use_storage,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def shared_storage(settings, worker_env):
    """This process (and its live server thread) uses the worker's bucket on the S3 server."""
    use_storage(settings, bucket=worker_env["S3_BUCKET"], endpoint=worker_env["S3_ENDPOINT_URL"])
    yield get_storage()
    get_storage.cache_clear()


@pytest.fixture
def openai_client(live_server, make_org):
    handle = make_org("E2E Org", plan="pro")
    client = make_openai_client(handle.key("member"), live_server, timeout=60)
    return handle, client


def wait_until_done(file_id: str, worker, timeout: float = 90.0) -> File:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        file = File.objects.unscoped_across_orgs().get(public_id=file_id)
        if file.status in (FileStatus.PROCESSED, FileStatus.ERROR):
            return file
        time.sleep(0.2)
    raise AssertionError(f"{file_id} still {file.status}; worker log:\n{worker.read_log()[-4000:]}")


def test_openai_client_upload_scrub_download_delete(
    openai_client, shared_storage, start_worker, tmp_path
):
    handle, client = openai_client
    worker = start_worker(queues="cpu")
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(gzip_bytes(good_upload()))

    with path.open("rb") as fh:
        created = client.files.create(file=fh, purpose="fine-tune")
    assert created.id.startswith("file-") and created.object == "file"
    assert created.bytes == path.stat().st_size and created.filename == "train.jsonl.gz"
    assert created.status in ("uploaded", "processing", "processed")

    file = wait_until_done(created.id, worker)
    assert file.status == FileStatus.PROCESSED, (file.error, worker.read_log()[-3000:])
    assert quarantined_keys(handle.org) == [], "the raw upload must be gone from S3"
    assert stored_keys(handle.org) == [file.scrubbed_key]

    retrieved = client.files.retrieve(created.id)
    assert retrieved.status == "processed"
    extra = retrieved.model_extra  # LongTune's additions ride along in the OpenAI object
    assert extra["num_examples"] == 12 and extra["format"] == "chat"
    assert extra["report"]["pii"]["counts"] == {"EMAIL": 2, "PHONE": 2, "CREDIT_CARD": 1}

    listed = client.files.list()
    assert [f.id for f in listed.data] == [created.id]

    text = client.files.content(created.id).content.decode()
    for raw in RAW_SECRETS:
        assert raw not in text
    assert text.count("[EMAIL_1]") == 2 and text.count("[PHONE_1]") == 2
    assert "[CREDIT_CARD_1]" in text and "[EMAIL_2]" not in text and "[PHONE_2]" not in text

    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    assert stored_keys(handle.org) == []
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


@pytest.mark.parametrize("case", ["truncated_gzip", "gzip_bomb", "json_array"])
def test_bad_files_through_the_worker(case, openai_client, shared_storage, start_worker, tmp_path):
    handle, client = openai_client
    make, code, line = BAD_FILES[case]
    worker = start_worker(queues="cpu")
    path = tmp_path / f"{case}.jsonl"
    path.write_bytes(make())

    with path.open("rb") as fh:
        created = client.files.create(file=fh, purpose="fine-tune")
    file = wait_until_done(created.id, worker)

    retrieved = client.files.retrieve(created.id)
    assert retrieved.status == "error"
    assert retrieved.model_extra["error"]["code"] == code == file.error["code"]
    assert retrieved.model_extra["error"]["line"] == line
    assert retrieved.status_details.startswith(code)
    assert quarantined_keys(handle.org) == [] and stored_keys(handle.org) == []
    with pytest.raises(openai.ConflictError) as conflict:
        client.files.content(created.id)
    assert conflict.value.body["code"] == "file_rejected"
