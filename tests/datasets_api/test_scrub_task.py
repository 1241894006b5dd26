"""The scrub + validate task run in-process against the real S3 server (moto over HTTP).

Uploads go through the real API (APIClient) into quarantine; the task function then runs
here instead of in a worker (tests/datasets_api/test_files_worker.py covers the worker).
"""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from longtune.datasets.models import File, FileStatus, OrgPiiPolicy
from longtune.storage import get_storage
from longtune.tenancy.models import AuditLogEntry
from tests.datasets_api.files_helpers import (
    BAD_FILES,
    CARD,
    EMAIL,
    PHONE,
    RAW_SECRETS,
    good_upload,
    gzip_bytes,
    quarantined_keys,
    s3_files,  # noqa: F401  (fixture, used through pytestmark)
    stored_keys,
)
from workers.datasets import process_file

pytestmark = [pytest.mark.integration, pytest.mark.django_db, pytest.mark.usefixtures("s3_files")]


def upload(client, data: bytes, name: str = "train.jsonl") -> dict:
    response = client.post(
        "/v1/files",
        {"file": SimpleUploadedFile(name, data), "purpose": "fine-tune"},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    return response.json()


def upload_and_process(org_handle, data: bytes, name: str = "train.jsonl"):
    client = org_handle.client("member")
    body = upload(client, data, name)
    file = File.objects.for_org(org_handle.org).get(public_id=body["id"])
    assert quarantined_keys(org_handle.org) == [file.raw_key]
    result = process_file(file.pk)
    assert result["file"] == body["id"]
    file.refresh_from_db()
    return client, file


def test_good_file_is_scrubbed_reported_and_raw_deleted(org_a):
    client, file = upload_and_process(org_a, gzip_bytes(good_upload()), "train.jsonl.gz")

    assert file.status == FileStatus.PROCESSED, file.error
    assert file.raw_key == ""
    assert quarantined_keys(org_a.org) == []
    assert stored_keys(org_a.org) == [file.scrubbed_key]
    assert file.scrubbed_key.endswith(f"/files/{file.public_id}/scrubbed.jsonl")

    body = client.get(f"/v1/files/{file.public_id}").json()
    assert body["status"] == "processed" and body["error"] is None
    assert (body["format"], body["num_examples"]) == ("chat", 12)
    report = body["report"]
    assert report["valid"] and report["compression"] == "gzip"
    assert report["pii"]["counts"] == {"EMAIL": 2, "PHONE": 2, "CREDIT_CARD": 1}
    assert report["pii"]["distinct"] == {"EMAIL": 1, "PHONE": 1, "CREDIT_CARD": 1}
    assert all(
        EMAIL not in s and "4111 1111" not in s
        for v in report["pii"]["samples"].values()
        for s in v
    )
    tokens = report["token_stats"]
    assert tokens["examples"] == 12 and tokens["tokens"] == body["num_tokens"] > 0
    assert sum(tokens["histogram"].values()) == 12
    assert tokens["method"].startswith("estimate")

    # The openai client asks for "application/binary": any Accept gets the bytes.
    download = client.get(f"/v1/files/{file.public_id}/content", HTTP_ACCEPT="application/binary")
    assert download.status_code == 200 and download["Content-Type"] == "application/jsonl"
    content = b"".join(download.streaming_content)
    text = content.decode()
    for raw in RAW_SECRETS:
        assert raw not in text
    first, second = (json.loads(line) for line in content.splitlines()[:2])
    assert first["messages"][1]["content"] == "My email is [EMAIL_1], call me at [PHONE_1]."
    assert first["messages"][2]["content"] == "Thanks, I will write to [EMAIL_1]."
    assert second["messages"][1]["content"] == "Charge card [CREDIT_CARD_1] please."
    assert second["messages"][2]["content"].endswith("calling [PHONE_1].")  # other format, same id

    scrubbed = AuditLogEntry.objects.for_org(org_a.org).get(action="file.scrubbed")
    assert scrubbed.target_id == file.public_id
    assert scrubbed.metadata["pii"] == {"EMAIL": 2, "PHONE": 2, "CREDIT_CARD": 1}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_gets_its_error_code_and_leaves_nothing(case, org_a):
    make, code, line = BAD_FILES[case]
    client, file = upload_and_process(org_a, make(), f"{case}.jsonl")

    assert file.status == FileStatus.ERROR
    assert (file.error["code"], file.error["line"]) == (code, line), file.error
    assert file.error["errors"][0]["code"] == code
    assert quarantined_keys(org_a.org) == [], "the raw upload must be deleted"
    assert stored_keys(org_a.org) == [], "nothing scrubbed may be kept for a rejected file"
    assert file.scrubbed_key == ""

    body = client.get(f"/v1/files/{file.public_id}").json()
    assert body["status"] == "error"
    assert body["error"]["code"] == code and body["error"]["line"] == line
    assert body["status_details"].startswith(code)
    content = client.get(f"/v1/files/{file.public_id}/content")
    assert content.status_code == 409 and content.json()["error"]["code"] == "file_rejected"
    rejected = AuditLogEntry.objects.for_org(org_a.org).get(action="file.rejected")
    assert rejected.metadata["code"] == code


def test_many_bad_lines_are_listed_with_line_numbers(org_a):
    lines = good_upload().splitlines()
    lines[1] = b"{not json"
    lines[6] = b'{"messages": []}'
    _, file = upload_and_process(org_a, b"\n".join(lines) + b"\n")

    assert file.status == FileStatus.ERROR
    listed = [(e["line"], e["code"]) for e in file.error["errors"]]
    assert (2, "invalid_json") in listed and (7, "empty_messages") in listed
    assert (file.error["code"], file.error["line"]) == ("invalid_json", 2)
    assert file.error["error_counts"]["invalid_json"] == 1


def test_redelivery_is_idempotent_and_finishes_raw_deletion(org_a):
    _, file = upload_and_process(org_a, good_upload())
    before = (file.status, file.scrubbed_key, file.report, file.processed_at)

    assert process_file(file.pk)["status"] == "skipped"
    file.refresh_from_db()
    assert (file.status, file.scrubbed_key, file.report, file.processed_at) == before
    assert AuditLogEntry.objects.for_org(org_a.org).filter(action="file.scrubbed").count() == 1

    # A worker that died between "processed" and deleting the raw object: redelivery deletes it.
    get_storage().put_bytes("orgs/x/leftover", b"x")
    File.objects.unscoped_across_orgs().filter(pk=file.pk).update(raw_key="orgs/x/leftover")
    assert process_file(file.pk)["status"] == "skipped"
    assert not get_storage().exists("orgs/x/leftover")
    file.refresh_from_db()
    assert file.raw_key == "" and file.status == FileStatus.PROCESSED


def test_missing_raw_object_is_an_error_not_a_crash(org_a):
    client = org_a.client()
    body = upload(client, good_upload())
    file = File.objects.unscoped_across_orgs().get(public_id=body["id"])
    get_storage().delete(file.raw_key)

    process_file(file.pk)
    file.refresh_from_db()
    assert file.status == FileStatus.ERROR and file.error["code"] == "upload_missing"


def test_deleted_file_is_skipped(org_a):
    client = org_a.client()
    body = upload(client, good_upload())
    file = File.objects.unscoped_across_orgs().get(public_id=body["id"])
    assert client.delete(f"/v1/files/{body['id']}").status_code == 200

    assert process_file(file.pk) == {"file": file.pk, "status": "skipped"}
    assert stored_keys(org_a.org) == []


def test_org_pii_policy_reaches_the_scrubber(org_a):
    OrgPiiPolicy.objects.create(
        org=org_a.org,
        entities=["EMAIL", "CREDIT_CARD"],  # phones are not scrubbed for this org
        allow_values=[EMAIL.upper()],  # case-insensitive literal allow-list
        allow_patterns=[],
    )
    client, file = upload_and_process(org_a, good_upload())

    assert file.status == FileStatus.PROCESSED
    text = b"".join(client.get(f"/v1/files/{file.public_id}/content").streaming_content).decode()
    assert EMAIL in text and PHONE in text and CARD not in text
    pii = file.report["pii"]
    assert pii["counts"] == {"CREDIT_CARD": 1} and pii["allowed"] == {"EMAIL": 2}


def test_download_under_asgi_streams_with_an_async_iterator(org_a):
    """The ASGI server (the deployment default) gets an async body: no worker thread pinned."""
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    client, file = upload_and_process(org_a, good_upload())
    sync_body = b"".join(client.get(f"/v1/files/{file.public_id}/content").streaming_content)
    secret = org_a.key("viewer")

    async def download() -> tuple[int, bool, bytes]:
        response = await AsyncClient().get(
            f"/v1/files/{file.public_id}/content", headers={"authorization": f"Bearer {secret}"}
        )
        return (
            response.status_code,
            response.is_async,
            b"".join([chunk async for chunk in response.streaming_content]),
        )

    status, is_async, body = async_to_sync(download)()
    assert (status, is_async) == (200, True)
    assert body == sync_body and b"[EMAIL_1]" in body
