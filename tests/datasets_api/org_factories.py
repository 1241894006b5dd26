"""Factories for the generated tenant-isolation test: a processed File with real content.

The file is processed and its scrubbed object exists, so every /v1/files route (including
GET /v1/files/{id}/content) answers 200 to its own org: the isolation test's positive control.
"""

from __future__ import annotations

from longtune.api.ids import new_public_id
from longtune.datasets.models import File, FileStatus, Upload, UploadPart
from longtune.datasets.services import scrubbed_key
from longtune.storage import get_storage
from tests.org_factories import org_object_factory

FACTORY_CONTENT = (
    b'{"messages":[{"role":"user","content":"Hi [EMAIL_1]"},'
    b'{"role":"assistant","content":"Hello!"}]}\n'
)


@org_object_factory(File)
def make_processed_file(org):
    public_id = new_public_id("file-")
    key = scrubbed_key(org, public_id)
    size = get_storage().put_bytes(key, FACTORY_CONTENT)
    return File.objects.create(
        public_id=public_id,
        org=org,
        filename="factory.jsonl",
        purpose="fine-tune",
        status=FileStatus.PROCESSED,
        bytes=size,
        scrubbed_bytes=size,
        scrubbed_key=key,
        format="chat",
        num_examples=1,
        num_tokens=20,
        report={"valid": True},
    )


@org_object_factory(Upload)
def make_pending_upload(org):
    """A pending upload with one part received, addressable by every /v1/uploads/{id} route."""
    from datetime import timedelta

    from django.utils import timezone

    from longtune.datasets.uploads import parts_prefix

    upload = Upload.objects.create(
        org=org,
        filename="big.jsonl",
        purpose="fine-tune",
        mime_type="application/jsonl",
        bytes=2 * len(FACTORY_CONTENT),
        file_public_id=new_public_id("file-"),
        expires_at=timezone.now() + timedelta(hours=1),
    )
    part_id = new_public_id("part_")
    key = parts_prefix(upload) + part_id
    size = get_storage().put_bytes(key, FACTORY_CONTENT)
    UploadPart.objects.create(public_id=part_id, upload=upload, bytes=size, object_key=key)
    return upload
