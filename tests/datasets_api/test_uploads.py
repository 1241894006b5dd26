"""/v1/uploads: OpenAI's resumable Uploads API and LongTune's presigned S3 parts.

In-process tests run on the local-folder storage (the embedded default, where presigned URLs
are unavailable); the end-to-end tests use the official `openai` client against a live server,
httpx PUTs to presigned URLs on the real moto S3 server, and a real Celery worker.
"""

from __future__ import annotations

import hashlib
import io
import time
from datetime import timedelta

import httpx
import openai
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from longtune.datasets import uploads
from longtune.datasets.models import File, FileStatus, Upload, UploadPart, UploadStatus
from longtune.storage import (
    CompletedPart,
    ConcatenatedReader,
    LocalObjectStorage,
    MultipartError,
    get_storage,
)
from longtune.tenancy.models import OrgQuota
from tests.conftest import openai_client
from tests.datasets_api.files_helpers import (
    RAW_SECRETS,
    good_chat_examples,
    good_upload,
    jsonl,
    quarantined_keys,
    stored_keys,
    use_storage,
)
from workers.celery_app import app

JSONL = "application/jsonl"


@pytest.fixture
def local_storage(settings, tmp_path):
    """get_storage() is a fresh local folder for this test (the embedded default)."""
    settings.S3_BUCKET = ""
    settings.LOCAL_OBJECTS_DIR = tmp_path / "objects"
    get_storage.cache_clear()
    yield get_storage()
    get_storage.cache_clear()


def assert_error(response, status: int, code: str, param: str | None):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error
    assert error["message"]


def create(client, size: int, **overrides):
    body = {"filename": "train.jsonl", "purpose": "fine-tune", "bytes": size, "mime_type": JSONL}
    return client.post("/v1/uploads", body | overrides, format="json")


def send_part(client, upload_id: str, data: bytes):
    form = {"data": SimpleUploadedFile("blob", data)}
    return client.post(f"/v1/uploads/{upload_id}/parts", form, format="multipart")


def complete(client, upload_id: str, **body):
    return client.post(f"/v1/uploads/{upload_id}/complete", body, format="json")


def split(data: bytes, n: int) -> list[bytes]:
    step = -(-len(data) // n)
    return [data[i : i + step] for i in range(0, len(data), step)]


# --- the OpenAI flow, in process ------------------------------------------------------------


@pytest.mark.django_db
def test_parts_out_of_order_assemble_in_the_given_order_and_scrub(
    org_a, local_storage, django_capture_on_commit_callbacks, monkeypatch
):
    client = org_a.client("member")
    data = good_upload()
    first, second = split(data, 2)
    created = create(client, len(data))
    assert created.status_code == 200, created.content
    upload = created.json()
    assert upload["id"].startswith("upload_") and upload["object"] == "upload"
    assert (upload["status"], upload["bytes"], upload["file"]) == ("pending", len(data), None)
    assert upload["expires_at"] - upload["created_at"] == 3600

    part_2 = send_part(client, upload["id"], second).json()  # arrives first
    part_1 = send_part(client, upload["id"], first).json()
    assert part_1["object"] == "upload.part" and part_1["upload_id"] == upload["id"]
    assert part_1["id"].startswith("part_") and isinstance(part_1["created_at"], int)
    resumed = client.get(f"/v1/uploads/{upload['id']}").json()  # what a resuming client sees
    assert [p["id"] for p in resumed["parts"]] == [part_2["id"], part_1["id"]]
    assert resumed["bytes_received"] == len(data)

    md5 = hashlib.md5(data).hexdigest()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = complete(client, upload["id"], part_ids=[part_1["id"], part_2["id"]], md5=md5)
    assert response.status_code == 200, response.content
    done = response.json()
    assert done["status"] == "completed" and done["parts"] == []
    assert done["file"]["id"].startswith("file-") and done["file"]["status"] == "uploaded"
    assert done["file"]["bytes"] == len(data) and done["file"]["filename"] == "train.jsonl"

    file = File.objects.unscoped_across_orgs().get(public_id=done["file"]["id"])
    assert file.raw_key == f"orgs/{org_a.org.public_id}/quarantine/{file.public_id}"
    with get_storage().open(file.raw_key) as raw:
        assert raw.read() == data  # the client's order, not the arrival order
    assert client.get(f"/v1/files/{file.public_id}").json()["status"] == "uploaded"

    # on commit: the parts are deleted and the usual scrub task is sent (run eagerly here)
    assert len(callbacks) == 2
    monkeypatch.setattr(app.conf, "task_always_eager", True)
    for callback in callbacks:
        callback()
    file.refresh_from_db()
    assert file.status == FileStatus.PROCESSED, file.error
    assert quarantined_keys(org_a.org) == [] and stored_keys(org_a.org) == [file.scrubbed_key]


@pytest.mark.django_db
def test_declared_bytes_are_enforced(org_a, local_storage):
    client = org_a.client()
    upload_id = create(client, 10).json()["id"]
    assert_error(send_part(client, upload_id, b"x" * 11), 400, "bytes_mismatch", "data")
    part = send_part(client, upload_id, b"x" * 6).json()
    assert_error(send_part(client, upload_id, b"y" * 5), 400, "bytes_mismatch", "data")
    assert UploadPart.objects.filter(upload__public_id=upload_id).count() == 1
    assert len(quarantined_keys(org_a.org)) == 1  # the refused parts stored nothing

    assert_error(
        complete(client, upload_id, part_ids=[part["id"]]), 400, "bytes_mismatch", "part_ids"
    )
    assert client.get(f"/v1/uploads/{upload_id}").json()["status"] == "pending"
    assert not File.objects.for_org(org_a.org).exists()


@pytest.mark.django_db
def test_unknown_and_duplicate_part_ids_name_the_entry(org_a, org_b, local_storage):
    client = org_a.client()
    upload_id = create(client, 4).json()["id"]
    part = send_part(client, upload_id, b"abcd").json()
    other_upload = create(client, 4).json()["id"]
    foreign = send_part(client, other_upload, b"wxyz").json()
    theirs_upload = create(org_b.client(), 4).json()["id"]
    theirs = send_part(org_b.client(), theirs_upload, b"efgh").json()

    cases = [
        ([part["id"], part["id"]], "duplicate_part", "part_ids.1"),
        ([part["id"], "part_nope"], "unknown_part", "part_ids.1"),
        ([foreign["id"]], "unknown_part", "part_ids.0"),  # a part of another upload
        ([theirs["id"]], "unknown_part", "part_ids.0"),  # a part of another org
    ]
    for part_ids, code, param in cases:
        assert_error(complete(client, upload_id, part_ids=part_ids), 400, code, param)
    assert client.get(f"/v1/uploads/{upload_id}").json()["status"] == "pending"
    assert complete(client, upload_id, part_ids=[part["id"]]).json()["status"] == "completed"


@pytest.mark.django_db
def test_md5_mismatch_keeps_the_upload_resumable(org_a, local_storage):
    client = org_a.client()
    upload_id = create(client, 6).json()["id"]
    part = send_part(client, upload_id, b"abcdef").json()
    bad = complete(client, upload_id, part_ids=[part["id"]], md5="0" * 32)
    assert_error(bad, 400, "md5_mismatch", "md5")
    assert not File.objects.for_org(org_a.org).exists()
    assert [k.rsplit("/", 1)[-1] for k in quarantined_keys(org_a.org)] == [part["id"]]

    good = complete(
        client, upload_id, part_ids=[part["id"]], md5=hashlib.md5(b"abcdef").hexdigest()
    )
    assert good.status_code == 200 and good.json()["status"] == "completed"


@pytest.mark.django_db
def test_expired_upload_refuses_parts_and_is_cleaned_up(org_a, local_storage):
    client = org_a.client()
    upload_id = create(client, 8).json()["id"]
    part = send_part(client, upload_id, b"1234").json()
    Upload.objects.unscoped_across_orgs().filter(public_id=upload_id).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert client.get(f"/v1/uploads/{upload_id}").json()["status"] == "expired"

    assert_error(send_part(client, upload_id, b"5678"), 409, "upload_expired", None)
    assert (
        Upload.objects.unscoped_across_orgs().get(public_id=upload_id).status
        == UploadStatus.EXPIRED
    )
    assert quarantined_keys(org_a.org) == [], "an expired upload's parts are deleted"
    assert_error(complete(client, upload_id, part_ids=[part["id"]]), 409, "upload_expired", None)
    # its quota reservation is released
    assert client.get("/v1/organization").json()["usage"]["storage_bytes"] == 0


@pytest.mark.django_db
def test_sweeper_expires_untouched_uploads(org_a, local_storage):
    client = org_a.client()
    stale = create(client, 4).json()["id"]
    send_part(client, stale, b"abcd")
    fresh = create(client, 4).json()["id"]
    Upload.objects.unscoped_across_orgs().filter(public_id=stale).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    assert uploads.expire_stale_uploads() == 1
    statuses = dict(Upload.objects.unscoped_across_orgs().values_list("public_id", "status"))
    assert (statuses[stale], statuses[fresh]) == ("expired", "pending")
    assert quarantined_keys(org_a.org) == []


@pytest.mark.django_db
def test_cancel(org_a, local_storage, django_capture_on_commit_callbacks):
    client = org_a.client()
    upload_id = create(client, 4).json()["id"]
    send_part(client, upload_id, b"ab")
    with django_capture_on_commit_callbacks(execute=True):
        cancelled = client.post(f"/v1/uploads/{upload_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert quarantined_keys(org_a.org) == []
    assert_error(send_part(client, upload_id, b"cd"), 409, "upload_cancelled", None)
    assert_error(client.post(f"/v1/uploads/{upload_id}/cancel"), 409, "upload_cancelled", None)

    done_id = create(client, 2).json()["id"]
    part = send_part(client, done_id, b"ok").json()
    complete(client, done_id, part_ids=[part["id"]])
    assert_error(client.post(f"/v1/uploads/{done_id}/cancel"), 409, "upload_completed", None)
    assert_error(send_part(client, done_id, b"!"), 409, "upload_completed", None)


@pytest.mark.django_db
def test_storage_quota_is_reserved_at_create(org_a, local_storage):
    client = org_a.client()
    OrgQuota.objects.create(org=org_a.org, storage_bytes=1000)
    assert create(client, 600).status_code == 200
    assert client.get("/v1/organization").json()["usage"]["storage_bytes"] == 600
    assert_error(create(client, 600), 429, "quota_exceeded", "storage_bytes")
    assert Upload.objects.for_org(org_a.org).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"bytes": 0}, 400, "min_value", "bytes"),
        ({"bytes": "lots"}, 400, "invalid", "bytes"),
        ({"purpose": "batch"}, 400, "invalid_choice", "purpose"),
        ({"mime_type": "jsonl"}, 400, "invalid", "mime_type"),
        ({"filename": ""}, 400, "blank", "filename"),
        ({"expires_after": {"anchor": "created_at"}}, 400, "unknown_field", "expires_after"),
        ({"bytes": 9 * 1024**3}, 413, "file_too_large", "bytes"),
    ],
    ids=["zero", "text", "purpose", "mime", "filename", "unknown", "too-big"],
)
def test_bad_create_bodies(org_a, local_storage, body, status, code, param):
    assert_error(create(org_a.client(), 10, **body), status, code, param)
    assert not Upload.objects.unscoped_across_orgs().exists()


@pytest.mark.django_db
def test_bad_part_and_complete_requests(org_a, local_storage, monkeypatch):
    client = org_a.client()
    upload_id = create(client, 100).json()["id"]
    url = f"/v1/uploads/{upload_id}/parts"
    assert_error(client.post(url, {"data": "x"}, format="json"), 400, "multipart_required", "data")
    assert_error(client.post(url, {}, format="multipart"), 400, "required", "data")
    assert_error(
        client.post(url, {"data": "text"}, format="multipart"), 400, "invalid_type", "data"
    )
    assert_error(send_part(client, upload_id, b""), 400, "empty_part", "data")
    monkeypatch.setattr(uploads, "MAX_PART_BYTES", 8)
    assert_error(send_part(client, upload_id, b"x" * 9), 413, "part_too_large", "data")

    assert_error(complete(client, upload_id), 400, "required", "part_ids")
    both = complete(client, upload_id, part_ids=["part_x"], parts=[{"part_number": 1, "etag": "e"}])
    assert_error(both, 400, "conflicting_fields", "part_ids")
    assert_error(complete(client, upload_id, part_ids=[]), 400, "empty", "part_ids")
    bad_md5 = complete(client, upload_id, part_ids=["part_x"], md5="xyz")
    assert_error(bad_md5, 400, "invalid", "md5")
    no_presign = complete(client, upload_id, parts=[{"part_number": 1, "etag": "e"}])
    assert_error(no_presign, 400, "no_presigned_parts", "parts")
    assert_error(
        complete(client, upload_id, parts=[{"part_number": 0, "etag": "e"}]),
        400,
        "min_value",
        "parts.0.part_number",
    )


@pytest.mark.django_db
def test_presign_is_unavailable_on_local_storage(org_a, local_storage):
    client = org_a.client()
    upload_id = create(client, 10).json()["id"]
    url = f"/v1/uploads/{upload_id}/presigned_parts"
    assert_error(
        client.post(url, {"part_numbers": [1]}, format="json"), 400, "presign_unavailable", None
    )


@pytest.mark.django_db
def test_roles_and_isolation(org_a, org_b, local_storage):
    owner = org_a.client()
    upload_id = create(owner, 4).json()["id"]
    part = send_part(owner, upload_id, b"abcd").json()

    viewer = org_a.client("viewer")
    assert viewer.get(f"/v1/uploads/{upload_id}").status_code == 200
    assert_error(create(viewer, 4), 403, "insufficient_role", None)
    assert_error(send_part(viewer, upload_id, b"abcd"), 403, "insufficient_role", None)
    assert_error(complete(viewer, upload_id, part_ids=[part["id"]]), 403, "insufficient_role", None)

    other = org_b.client()
    assert_error(other.get(f"/v1/uploads/{upload_id}"), 404, "not_found", None)
    assert_error(send_part(other, upload_id, b"abcd"), 404, "not_found", None)
    assert_error(complete(other, upload_id, part_ids=[part["id"]]), 404, "not_found", None)
    assert_error(other.post(f"/v1/uploads/{upload_id}/cancel"), 404, "not_found", None)
    assert (
        Upload.objects.unscoped_across_orgs().get(public_id=upload_id).status
        == UploadStatus.PENDING
    )


# --- storage multipart: the local folder behaves like the real S3 server -------------------


@pytest.fixture(params=["local", "s3"])
def any_storage(request, tmp_path):
    if request.param == "local":
        return LocalObjectStorage(tmp_path)
    return request.getfixturevalue("s3_storage")


@pytest.mark.integration
def test_storage_multipart_parity(any_storage):
    storage = any_storage
    first, last = b"a" * (5 * 1024 * 1024), b"tail"  # S3: every part but the last >= 5 MiB
    key = "orgs/o/quarantine/file-x"
    upload_id = storage.create_multipart(key)
    etag_2 = storage.upload_part(key, upload_id, 2, io.BytesIO(last))
    etag_1 = storage.upload_part(key, upload_id, 1, io.BytesIO(first))
    listed = storage.list_parts(key, upload_id)
    assert {n: info.size for n, info in listed.items()} == {1: len(first), 2: len(last)}
    assert listed[1].etag == etag_1.strip('"') == hashlib.md5(first).hexdigest()
    assert not storage.exists(key) and [i.key for i in storage.list("")] == []

    with pytest.raises(MultipartError) as wrong:
        storage.complete_multipart(
            key, upload_id, [CompletedPart(1, etag_1), CompletedPart(2, '"0"')]
        )
    assert wrong.value.code == "invalid_part"
    with pytest.raises(MultipartError) as order:
        storage.complete_multipart(
            key, upload_id, [CompletedPart(2, etag_2), CompletedPart(1, etag_1)]
        )
    assert order.value.code == "invalid_part_order"

    size = storage.complete_multipart(
        key, upload_id, [CompletedPart(1, etag_1.strip('"')), CompletedPart(2, etag_2)]
    )
    assert size == len(first) + len(last)
    with storage.open(key) as stream:
        assert stream.read() == first + last
    assert [i.key for i in storage.list("")] == [key]

    aborted = storage.create_multipart("orgs/o/quarantine/file-y")
    storage.upload_part("orgs/o/quarantine/file-y", aborted, 1, io.BytesIO(b"zz"))
    storage.abort_multipart("orgs/o/quarantine/file-y", aborted)
    storage.abort_multipart("orgs/o/quarantine/file-y", aborted)  # idempotent
    with pytest.raises(MultipartError) as gone:
        storage.list_parts("orgs/o/quarantine/file-y", aborted)
    assert gone.value.code == "no_such_upload"
    assert not storage.exists("orgs/o/quarantine/file-y")


# --- end to end: real S3 server, real worker ------------------------------------------------


@pytest.fixture
def shared_storage(settings, worker_env):
    """This process (and its live server thread) uses the worker's bucket on the S3 server."""
    use_storage(settings, bucket=worker_env["S3_BUCKET"], endpoint=worker_env["S3_ENDPOINT_URL"])
    yield get_storage()
    get_storage.cache_clear()


def wait_until_done(file_id: str, worker, timeout: float = 120.0) -> File:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        file = File.objects.unscoped_across_orgs().get(public_id=file_id)
        if file.status in (FileStatus.PROCESSED, FileStatus.ERROR):
            return file
        time.sleep(0.2)
    raise AssertionError(f"{file_id} still {file.status}; worker log:\n{worker.read_log()[-4000:]}")


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_openai_client_uploads_flow(live_server, make_org, shared_storage, start_worker, tmp_path):
    handle = make_org("Uploads Org", plan="pro")
    client = openai_client(handle.key("member"), live_server, timeout=60)
    worker = start_worker(queues="cpu")
    data = good_upload()
    chunks = split(data, 3)

    upload = client.uploads.create(
        bytes=len(data), filename="train.jsonl", mime_type=JSONL, purpose="fine-tune"
    )
    assert upload.status == "pending" and upload.object == "upload" and upload.file is None
    parts = [client.uploads.parts.create(upload.id, data=chunk) for chunk in reversed(chunks)]
    assert all(p.upload_id == upload.id and p.object == "upload.part" for p in parts)
    with pytest.raises(openai.BadRequestError) as short:
        client.uploads.complete(upload.id, part_ids=[parts[0].id])
    assert short.value.body["code"] == "bytes_mismatch"

    done = client.uploads.complete(
        upload.id, part_ids=[p.id for p in reversed(parts)], md5=hashlib.md5(data).hexdigest()
    )
    assert done.status == "completed" and done.file is not None
    assert done.file.id.startswith("file-") and done.file.bytes == len(data)

    file = wait_until_done(done.file.id, worker)
    assert file.status == FileStatus.PROCESSED, (file.error, worker.read_log()[-3000:])
    assert quarantined_keys(handle.org) == [] and stored_keys(handle.org) == [file.scrubbed_key]
    text = client.files.content(file.public_id).content.decode()
    assert all(raw not in text for raw in RAW_SECRETS) and "[EMAIL_1]" in text

    # the client's chunked helper drives the same three endpoints
    path = tmp_path / "more.jsonl"
    path.write_bytes(data)
    chunked = client.uploads.upload_file_chunked(
        file=path, mime_type=JSONL, purpose="fine-tune", part_size=1000
    )
    assert chunked.status == "completed" and chunked.file.bytes == len(data)
    assert wait_until_done(chunked.file.id, worker).status == FileStatus.PROCESSED


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_presigned_parts_put_straight_to_s3(make_org, shared_storage, start_worker):
    handle = make_org("Presigned Org", plan="pro")
    api = handle.client("member")
    worker = start_worker(queues="cpu")
    rows = good_chat_examples()
    data = jsonl(rows[:2] + rows[2:] * 4000)  # ~5.6 MiB: two parts, the first >= 5 MiB (S3)
    first, second = data[: 5 * 1024 * 1024], data[5 * 1024 * 1024 :]

    upload_id = create(api, len(data)).json()["id"]
    presign_url = f"/v1/uploads/{upload_id}/presigned_parts"
    dupes = api.post(presign_url, {"part_numbers": [1, 1]}, format="json")
    assert_error(dupes, 400, "duplicate_part", "part_numbers.1")
    presigned = api.post(presign_url, {"part_numbers": [1, 2]}, format="json")
    assert presigned.status_code == 200, presigned.content
    urls = {p["part_number"]: p["url"] for p in presigned.json()["data"]}
    assert all(p["method"] == "PUT" for p in presigned.json()["data"])

    with httpx.Client(trust_env=False, timeout=60) as s3:
        etag_1 = s3.put(urls[1], content=first).raise_for_status().headers["ETag"]
        etag_2 = s3.put(urls[2], content=second[:100]).raise_for_status().headers["ETag"]
        short = complete(
            api,
            upload_id,
            parts=[{"part_number": 1, "etag": etag_1}, {"part_number": 2, "etag": etag_2}],
        )
        assert_error(short, 400, "bytes_mismatch", "parts")
        etag_2 = s3.put(urls[2], content=second).raise_for_status().headers["ETag"]  # resume

    never_put = complete(api, upload_id, parts=[{"part_number": 3, "etag": "x"}])
    assert_error(never_put, 400, "unknown_part", "parts.0.part_number")
    stale_etag = complete(
        api,
        upload_id,
        parts=[{"part_number": 1, "etag": etag_1}, {"part_number": 2, "etag": '"0f"'}],
    )
    assert_error(stale_etag, 400, "invalid_part", "parts.1.etag")

    done = complete(
        api,
        upload_id,
        parts=[{"part_number": 1, "etag": etag_1}, {"part_number": 2, "etag": etag_2}],
    )
    assert done.status_code == 200, done.content
    assert done.json()["status"] == "completed"
    file = wait_until_done(done.json()["file"]["id"], worker)
    assert file.status == FileStatus.PROCESSED, (file.error, worker.read_log()[-3000:])
    assert file.bytes == len(data) and file.num_examples == 2 + 10 * 4000
    assert quarantined_keys(handle.org) == [], "the raw object is gone after scrubbing"


def test_concatenated_reader_fills_every_read_across_parts():
    """boto3's uploader takes a short read for the end of the stream: reads must be full."""
    pieces = [b"abc", b"", b"defgh", b"ij"]
    digest = hashlib.md5()
    reader = ConcatenatedReader([lambda p=p: io.BytesIO(p) for p in pieces], digest)
    assert [reader.read(4), reader.read(4), reader.read(4), reader.read(4)] == [
        b"abcd",
        b"efgh",
        b"ij",
        b"",
    ]
    assert digest.hexdigest() == hashlib.md5(b"abcdefghij").hexdigest()
