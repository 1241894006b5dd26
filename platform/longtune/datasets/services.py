"""File operations behind the API: accept an upload, delete a file, read its scrubbed bytes.

Why the upload is three steps: the quota check and the File row are one short transaction
holding the org row lock (so two concurrent uploads cannot both take the last free GiB), but
streaming gigabytes into object storage must not hold that lock. The row counts towards the
org's storage usage from the moment it exists, so the reservation stays honest while the
bytes travel. The scrub task is enqueued only once the raw object is complete.
"""

from __future__ import annotations

import logging
from typing import BinaryIO

from django.db import models, transaction
from django.db.models import Case, F, Sum, When
from django.http import HttpRequest

from longtune.api.errors import ApiError
from longtune.api.ids import new_public_id, public_id_prefix
from longtune.compute import broker, queues, tasks
from longtune.datasets.models import File, FilePurpose, FileStatus, Upload, UploadStatus
from longtune.datasets.policies import dataset_limits_for
from longtune.storage import QUARANTINE, ObjectNotFound, get_storage, org_prefix
from longtune.tenancy import audit
from longtune.tenancy.models import ApiKey, Organization
from longtune.tenancy.quotas import reserve_quota

logger = logging.getLogger("longtune.datasets")

MAX_FILENAME_LENGTH = 255


# --- object keys ----------------------------------------------------------------------------


def quarantine_key(org: Organization, file_public_id: str) -> str:
    """Where the raw upload waits for the scrubber: ``orgs/<org>/quarantine/<file-id>``."""
    return f"{org_prefix(org.public_id)}{QUARANTINE}/{file_public_id}"


def file_prefix(org: Organization, file_public_id: str) -> str:
    return f"{org_prefix(org.public_id)}files/{file_public_id}/"


def scrubbed_key(org: Organization, file_public_id: str) -> str:
    return f"{file_prefix(org, file_public_id)}scrubbed.jsonl"


# --- storage usage (quota provider) --------------------------------------------------------


def storage_bytes_used(org: Organization) -> int:
    """Bytes this org keeps in object storage for files.

    A pending upload counts its raw size (it occupies quarantine); a processed file its
    scrubbed size; a rejected file nothing (its raw object is deleted, nothing was kept); an
    unfinished resumable upload (datasets.uploads) its declared size.
    """
    total = (
        File.objects.for_org(org)
        .aggregate(
            used=Sum(
                Case(
                    When(status=FileStatus.PROCESSED, then=F("scrubbed_bytes")),
                    When(status__in=[FileStatus.UPLOADED, FileStatus.PROCESSING], then=F("bytes")),
                    default=0,
                    output_field=models.BigIntegerField(),
                )
            )
        )
        .get("used")
    )
    return int(total or 0) + pending_upload_bytes(org)


def pending_upload_bytes(org: Organization) -> int:
    """Declared sizes of unfinished resumable uploads: their parts are arriving in quarantine.

    An expired upload still counts until it is marked expired (its parts are deleted then).
    """
    pending = Upload.objects.for_org(org).filter(status=UploadStatus.PENDING)
    return int(pending.aggregate(total=Sum("bytes"))["total"] or 0)


# --- upload ---------------------------------------------------------------------------------


def clean_filename(name: str | None) -> str:
    """The client's file name as metadata: no path, no control characters, bounded length."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    return (base or "upload.jsonl")[:MAX_FILENAME_LENGTH]


def new_file_row(
    *,
    org: Organization,
    size: int,
    filename: str,
    purpose: str,
    api_key: ApiKey | None,
    public_id: str | None = None,
) -> File:
    """The row of an upload whose raw bytes go (or already went) to its quarantine key."""
    file_id = public_id or new_public_id(public_id_prefix(File))
    return File.objects.create(
        public_id=file_id,
        org=org,
        uploaded_by_key=api_key,
        uploaded_by_user=api_key.created_by if api_key else None,
        filename=filename,
        purpose=purpose,
        status=FileStatus.UPLOADED,
        bytes=size,
        raw_key=quarantine_key(org, file_id),
    )


def _reserve_file_row(
    *, org: Organization, size: int, filename: str, purpose: str, api_key: ApiKey | None
) -> File:
    """Check the storage quota and create the row, atomically under the org lock."""
    with reserve_quota(org) as reservation:
        reservation.check("storage_bytes", used=storage_bytes_used(org), requested=size)
        return new_file_row(org=org, size=size, filename=filename, purpose=purpose, api_key=api_key)


def accept_upload(
    *,
    org: Organization,
    stream: BinaryIO,
    size: int,
    filename: str,
    purpose: str,
    api_key: ApiKey | None = None,
    request: HttpRequest | None = None,
) -> File:
    """Quota check + row, stream the bytes into quarantine, enqueue the scrub task.

    ``stream`` is Django's UploadedFile (spooled to disk above FILE_UPLOAD_MAX_MEMORY_SIZE);
    storage.put copies it in 1 MiB chunks (S3: multipart), so memory stays flat.
    """
    limits = dataset_limits_for(org)
    if size > limits.max_upload_bytes:
        raise ApiError(
            status=413,
            code="file_too_large",
            message=f"The file is {size} bytes; the limit is {limits.max_upload_bytes} bytes.",
            param="file",
        )
    file = _reserve_file_row(
        org=org, size=size, filename=filename, purpose=purpose, api_key=api_key
    )
    try:
        get_storage().put(file.raw_key, stream)
    except Exception:
        logger.exception("storing upload %s failed", file.public_id)
        _delete_objects(file)
        file.delete()
        raise ApiError(
            status=503,
            code="storage_unavailable",
            message="The file could not be stored; please retry the upload.",
        ) from None
    announce_upload(file, api_key=api_key, request=request)
    return file


def announce_upload(
    file: File,
    *,
    api_key: ApiKey | None,
    request: HttpRequest | None,
    metadata: dict[str, object] | None = None,
) -> None:
    """The raw object is complete in quarantine: audit it and queue the scrub on commit."""
    audit.record(
        org=file.org,
        action="file.uploaded",
        target=file,
        request=request,
        actor_api_key=api_key,
        metadata={"bytes": file.bytes, "filename": file.filename, "purpose": file.purpose}
        | (metadata or {}),
    )
    transaction.on_commit(lambda: enqueue_scrub(file.pk))


def enqueue_scrub(file_pk: int) -> None:
    """Send the scrub task to the ``cpu`` queue, by name (workers.datasets imports this
    module; importing it back would be a cycle between the tiers)."""
    broker.send(tasks.SCRUB_FILE, [file_pk], queues.CPU)


# --- delete / content -------------------------------------------------------------------------


def _delete_objects(file: File) -> None:
    storage = get_storage()
    if file.raw_key:
        storage.delete(file.raw_key)
    storage.delete_prefix(file_prefix(file.org, file.public_id))


def delete_file(file: File, *, request: HttpRequest | None = None) -> dict[str, object]:
    """Remove every object of the file and its row; returns OpenAI's deletion object.

    A scrub task still running on this file notices the missing row when it saves and
    deletes what it wrote (see workers.datasets), so nothing is left behind either way.
    """
    public_id = file.public_id
    _delete_objects(file)
    audit.record(
        org=file.org,
        action="file.deleted",
        target=file,
        request=request,
        metadata={"filename": file.filename, "status": file.status},
    )
    file.delete()
    return {"id": public_id, "object": "file", "deleted": True}


def open_scrubbed(file: File) -> BinaryIO:
    """The scrubbed JSONL of a processed file (the only bytes of a file anyone may read)."""
    if file.status == FileStatus.ERROR:
        raise ApiError(
            status=409,
            code="file_rejected",
            message="The file failed validation and has no content; see its `error`.",
            param="id",
        )
    if file.status != FileStatus.PROCESSED or not file.scrubbed_key:
        raise ApiError(
            status=409,
            code="file_not_processed",
            message=f"The file is '{file.status}'; content is available once it is 'processed'.",
            param="id",
        )
    try:
        return get_storage().open(file.scrubbed_key)
    except ObjectNotFound:
        logger.error("scrubbed object of %s is missing: %s", file.public_id, file.scrubbed_key)
        raise ApiError(
            status=409,
            code="file_content_missing",
            message="The file's content is no longer available.",
            param="id",
        ) from None


# --- files the platform writes ----------------------------------------------------------------


def create_results_file(
    org: Organization,
    *,
    filename: str,
    content: bytes,
    format: str = "csv",
    purpose: str = FilePurpose.FINE_TUNE_RESULTS,
) -> File:
    """A file the platform produced (a job's step metrics, an evaluation's heatmap), stored and
    ``processed`` at once.

    Why here: Files, their object keys and their deletion are this app's; a result file is
    stored under the file's own prefix like a scrubbed upload, so ``GET .../content`` serves it
    and ``DELETE`` removes it the same way. It never saw the scrubber (there is no user data
    in it) and it is not a dataset (``token_stats`` refuses it).
    """
    file_id = new_public_id(public_id_prefix(File))
    key = f"{file_prefix(org, file_id)}{filename}"
    get_storage().put_bytes(key, content)
    return File.objects.create(
        public_id=file_id,
        org=org,
        filename=filename,
        purpose=purpose,
        status=FileStatus.PROCESSED,
        bytes=len(content),
        scrubbed_bytes=len(content),
        scrubbed_key=key,
        format=format,
    )
