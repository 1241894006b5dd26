"""POST/GET/DELETE /v1/files: request validation, OpenAI shapes, quota, roles, enqueueing."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from longtune.datasets.models import File, FileStatus
from longtune.datasets.services import quarantine_key
from longtune.storage import get_storage
from longtune.tenancy.models import AuditLogEntry, OrgQuota
from tests.datasets_api.files_helpers import (
    good_upload,
    quarantined_keys,
    s3_files,  # noqa: F401  (fixture, used through pytestmark)
    stored_keys,
)
from workers.celery_app import app

pytestmark = [pytest.mark.integration, pytest.mark.django_db, pytest.mark.usefixtures("s3_files")]

OPENAI_FILE_FIELDS = {"id", "object", "bytes", "created_at", "filename", "purpose", "status"}


def post_file(client, data: bytes | None = b"x", purpose: str | None = "fine-tune", **extra):
    form = dict(extra)
    if data is not None:
        form["file"] = SimpleUploadedFile("train.jsonl", data)
    if purpose is not None:
        form["purpose"] = purpose
    return client.post("/v1/files", form, format="multipart")


def assert_error(response, status: int, code: str, param: str | None):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error
    assert error["message"]


def test_upload_streams_into_quarantine_and_enqueues_on_commit(
    org_a, django_capture_on_commit_callbacks, monkeypatch
):
    data = good_upload()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_file(org_a.client("member"), data)
    assert response.status_code == 201, response.content
    body = response.json()
    assert OPENAI_FILE_FIELDS <= set(body)
    assert body["id"].startswith("file-") and body["object"] == "file"
    assert (body["bytes"], body["filename"], body["purpose"]) == (
        len(data),
        "train.jsonl",
        "fine-tune",
    )
    assert body["status"] == "uploaded" and isinstance(body["created_at"], int)

    file = File.objects.unscoped_across_orgs().get(public_id=body["id"])
    assert file.raw_key == quarantine_key(org_a.org, file.public_id)
    assert file.raw_key == f"orgs/{org_a.org.public_id}/quarantine/{file.public_id}"
    with get_storage().open(file.raw_key) as raw:
        assert raw.read() == data
    assert AuditLogEntry.objects.for_org(org_a.org).filter(action="file.uploaded").count() == 1

    # The commit hook sends the scrub task; run it eagerly here to prove the wiring.
    assert len(callbacks) == 1
    monkeypatch.setattr(app.conf, "task_always_eager", True)
    callbacks[0]()
    file.refresh_from_db()
    assert file.status == FileStatus.PROCESSED and quarantined_keys(org_a.org) == []


def test_content_is_409_until_processed(org_a):
    client = org_a.client()
    file_id = post_file(client, good_upload()).json()["id"]
    response = client.get(f"/v1/files/{file_id}/content")
    assert_error(response, 409, "file_not_processed", "id")


@pytest.mark.parametrize(
    ("kwargs", "code", "param"),
    [
        ({"data": None}, "required", "file"),
        ({"purpose": None}, "required", "purpose"),
        ({"purpose": "batch"}, "invalid_choice", "purpose"),
        ({"purpose": ""}, "required", "purpose"),
        ({"data": b""}, "empty_file", "file"),
        ({"data": None, "file": "just text"}, "invalid_type", "file"),
    ],
    ids=["missing-file", "missing-purpose", "wrong-purpose", "blank-purpose", "empty", "text"],
)
def test_bad_upload_forms_are_400(org_a, kwargs, code, param):
    assert_error(post_file(org_a.client(), **kwargs), 400, code, param)
    assert not File.objects.for_org(org_a.org).exists()
    assert stored_keys(org_a.org) == []


def test_non_multipart_bodies_are_400(org_a):
    client = org_a.client()
    as_json = client.post("/v1/files", {"purpose": "fine-tune", "file": "x"}, format="json")
    assert_error(as_json, 400, "multipart_required", "file")
    raw = client.generic("POST", "/v1/files", b"\x00\x01", content_type="application/octet-stream")
    assert_error(raw, 400, "multipart_required", "file")
    no_body = client.generic("POST", "/v1/files", b"")
    assert_error(no_body, 400, "multipart_required", "file")
    no_boundary = client.generic(
        "POST", "/v1/files", b"garbage", content_type="multipart/form-data"
    )
    assert_error(no_boundary, 400, "invalid_multipart", "file")


def test_viewer_cannot_upload_or_delete(org_a):
    response = post_file(org_a.client("viewer"), good_upload())
    assert_error(response, 403, "insufficient_role", None)
    file_id = post_file(org_a.client("member"), good_upload()).json()["id"]
    viewer = org_a.client("viewer")
    assert_error(viewer.delete(f"/v1/files/{file_id}"), 403, "insufficient_role", None)
    assert viewer.get(f"/v1/files/{file_id}").status_code == 200  # but can read


def test_storage_quota_is_enforced_and_usage_reported(org_a):
    client = org_a.client()
    data = good_upload()
    OrgQuota.objects.create(org=org_a.org, storage_bytes=len(data) + 10)
    assert post_file(client, data).status_code == 201
    usage = client.get("/v1/organization").json()["usage"]["storage_bytes"]
    assert usage == len(data)

    response = post_file(client, data)
    assert_error(response, 429, "quota_exceeded", "storage_bytes")
    assert File.objects.for_org(org_a.org).count() == 1
    assert len(quarantined_keys(org_a.org)) == 1  # the refused upload stored nothing


def test_list_is_openai_shaped_and_paginates(org_a, org_b):
    client = org_a.client()
    ids = [post_file(client, good_upload()).json()["id"] for _ in range(3)]
    post_file(org_b.client(), good_upload())

    page = client.get("/v1/files?limit=2").json()
    assert page["object"] == "list" and page["has_more"] is True
    assert [f["id"] for f in page["data"]] == ids[::-1][:2]
    rest = client.get(f"/v1/files?limit=2&after={page['last_id']}").json()
    assert [f["id"] for f in rest["data"]] == [ids[0]] and rest["has_more"] is False
    assert client.get("/v1/files?purpose=evaluation").json()["data"] == []
    assert len(client.get("/v1/files?purpose=fine-tune").json()["data"]) == 3


def test_delete_removes_objects_and_row(org_a):
    client = org_a.client()
    file_id = post_file(client, good_upload()).json()["id"]
    assert quarantined_keys(org_a.org)

    response = client.delete(f"/v1/files/{file_id}")
    assert response.status_code == 200
    assert response.json() == {"id": file_id, "object": "file", "deleted": True}
    assert stored_keys(org_a.org) == []
    assert not File.objects.unscoped_across_orgs().filter(public_id=file_id).exists()
    assert_error(client.get(f"/v1/files/{file_id}"), 404, "not_found", None)
    assert AuditLogEntry.objects.for_org(org_a.org).filter(action="file.deleted").count() == 1


def test_unknown_and_malformed_ids_are_404(org_a):
    client = org_a.client()
    assert_error(client.get("/v1/files/file-doesnotexist"), 404, "not_found", None)
    assert_error(client.get("/v1/files/ftjob-abc"), 404, "not_found", None)


def test_big_upload_reaches_storage_as_a_temp_file_not_memory(org_a, settings, monkeypatch):
    """Above FILE_UPLOAD_MAX_MEMORY_SIZE Django spools the part to disk; that file object is
    what storage.put streams from (1 MiB reads / S3 multipart), never a bytes copy."""
    from django.core.files.uploadedfile import TemporaryUploadedFile

    from longtune.datasets import services

    seen = []
    real_storage = services.get_storage()

    class RecordingStorage:
        def __getattr__(self, name):
            return getattr(real_storage, name)

        def put(self, key, stream):
            seen.append(type(stream))
            return real_storage.put(key, stream)

    monkeypatch.setattr(services, "get_storage", RecordingStorage)
    data = good_upload() * (settings.FILE_UPLOAD_MAX_MEMORY_SIZE // len(good_upload()) + 2)
    body = post_file(org_a.client(), data).json()
    assert seen == [TemporaryUploadedFile]
    assert get_storage().size(
        File.objects.unscoped_across_orgs().get(public_id=body["id"]).raw_key
    ) == len(data)
