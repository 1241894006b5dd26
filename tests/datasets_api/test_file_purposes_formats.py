"""Every file purpose x format x status, on every file endpoint: a 2xx or a coded 4xx, never a 500.

Result files (a job's step_metrics.csv, an evaluation's heatmap PNG) sit in the same list as
datasets; the token_stats 500 on a CSV (issue 15) was one combination nobody had tried.
"""

from __future__ import annotations

import pytest

from longtune.api.ids import new_public_id
from longtune.datasets.formats import DatasetFormat
from longtune.datasets.models import DATASET_PURPOSES, File, FilePurpose, FileStatus
from longtune.datasets.services import scrubbed_key
from longtune.storage import get_storage
from longtune.tenancy.models import OrgQuota

pytestmark = pytest.mark.django_db

# What a file of each format holds (the scrubber records the format it detected in the content).
CONTENT: dict[str, bytes] = {
    "chat": b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n',
    "instruction": b'{"prompt": "2+2?", "completion": "4"}\n',
    "text": b'{"text": "plain text"}\n',
    "csv": b"step,loss\n1,0.5\n",
    "png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 16,
    "": b'{"text": "undetected"}\n',
}
FORMATS = list(CONTENT)
STATUSES = [s.value for s in FileStatus]


def stored_file(org, purpose: str, format: str, status: str) -> File:
    """A File row as the platform leaves it: processed ones have their object stored."""
    content = CONTENT[format]
    public_id = new_public_id("file-")
    key = scrubbed_key(org, public_id) if status == FileStatus.PROCESSED else ""
    if key:
        get_storage().put_bytes(key, content)
    return File.objects.create(
        public_id=public_id, org=org, filename=f"f.{format or 'bin'}", purpose=purpose,
        status=status, bytes=len(content), scrubbed_bytes=len(content) if key else None,
        scrubbed_key=key, format=format, num_examples=1, num_tokens=5,
    )  # fmt: skip


def assert_answer(response, context) -> None:
    assert response.status_code < 500, (context, response.status_code, response.content[:300])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] and error["type"], context


@pytest.mark.parametrize("purpose", [p.value for p in FilePurpose])
def test_every_file_endpoint_answers_every_purpose_format_and_status(org_a, purpose):
    OrgQuota.objects.create(org=org_a.org, requests_per_minute=100_000)
    client = org_a.client()
    for format in FORMATS:
        for status in STATUSES:
            file = stored_file(org_a.org, purpose, format, status)
            url = f"/v1/files/{file.public_id}"
            context = (purpose, format, status)
            detail = client.get(url)
            assert detail.status_code == 200 and detail.json()["purpose"] == purpose, context
            assert_answer(client.get(f"{url}/content"), (*context, "content"))
            stats = client.get(f"{url}/token_stats")
            assert_answer(stats, (*context, "token_stats"))
            if purpose not in DATASET_PURPOSES or format not in {f.value for f in DatasetFormat}:
                assert stats.status_code in (400, 409), (context, stats.content)
            assert_answer(client.delete(url), (*context, "delete"))
    listed = client.get("/v1/files", {"purpose": purpose})
    assert listed.status_code == 200


def test_list_filter_and_upload_refuse_unknown_or_platform_purposes(org_a):
    client = org_a.client()
    bogus = client.get("/v1/files", {"purpose": "bogus"})
    assert bogus.status_code == 400 and bogus.json()["error"]["param"] == "purpose"
    from django.core.files.uploadedfile import SimpleUploadedFile

    for purpose in (FilePurpose.FINE_TUNE_RESULTS, FilePurpose.EVALUATION_RESULTS, "bogus"):
        upload = client.post(
            "/v1/files",
            {"file": SimpleUploadedFile("a.jsonl", b'{"text": "x"}\n'), "purpose": purpose},
            format="multipart",
        )
        assert upload.status_code == 400, (purpose, upload.content)
        assert upload.json()["error"]["param"] == "purpose"
