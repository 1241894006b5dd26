"""Resumable big-file uploads: OpenAI's Uploads API plus presigned S3 part URLs.

Two ways to get the bytes in, one way out:

- **Parts through the API** (OpenAI's flow, what the official client does): each
  ``POST /v1/uploads/{id}/parts`` stores its bytes as an object under the future file's
  quarantine key (``.../quarantine/<file-id>.parts/<part-id>``), so parts may arrive in any
  order, in parallel, and be retried. ``complete`` streams the listed parts, in the client's
  order, into the quarantine object.
- **Presigned parts** (LongTune's extension, S3 only): the client PUTs parts straight to S3
  through presigned ``UploadPart`` URLs of an S3 multipart upload, so gigabytes never pass
  through the web tier; ``complete`` with ``parts=[{part_number, etag}]`` has S3 assemble them.

Either way completion ends in ``services.new_file_row`` + ``services.announce_upload``: the
same File row in quarantine and the same scrub task as a one-shot upload.

Why declared ``bytes`` matter: the storage quota is reserved for them at creation (the
pending upload counts in ``services.storage_bytes_used``), so parts may never add up to more,
and completion demands exactly that many bytes.

Concurrency: every state change re-reads the upload with ``select_for_update``; completion
keeps that lock while it assembles, so a part or a cancel racing with it waits and then sees
the final status.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import BinaryIO

from django.db import transaction
from django.db.models import Sum
from django.http import HttpRequest
from django.utils import timezone

from longtune.api.errors import ApiError
from longtune.api.ids import new_public_id, public_id_prefix
from longtune.datasets import services
from longtune.datasets.limits import MIB
from longtune.datasets.models import File, Upload, UploadPart, UploadStatus
from longtune.datasets.policies import dataset_limits_for
from longtune.storage import (
    CompletedPart,
    ConcatenatedReader,
    MultipartError,
    get_storage,
    normalize_etag,
)
from longtune.tenancy.models import ApiKey, Organization
from longtune.tenancy.quotas import reserve_quota

logger = logging.getLogger("longtune.datasets")

UPLOAD_TTL = timedelta(hours=1)  # OpenAI's: an upload not completed within the hour expires
MAX_PART_BYTES = 64 * MIB  # OpenAI's limit for one part sent through the API
MAX_PARTS = 10_000  # per upload, either flow (S3's multipart limit)
MAX_PRESIGN_BATCH = 1_000  # part URLs handed out per request


@dataclass(frozen=True)
class PresignedPart:
    part_number: int
    url: str
    expires_at: int  # Unix seconds


# --- keys and small helpers -----------------------------------------------------------------


def raw_key(upload: Upload) -> str:
    """The quarantine object the assembled upload becomes (the File's ``raw_key``)."""
    return services.quarantine_key(upload.org, upload.file_public_id)


def parts_prefix(upload: Upload) -> str:
    """Where API-sent parts wait: inside quarantine, beside the future raw object."""
    return f"{raw_key(upload)}.parts/"


def effective_status(upload: Upload, now=None) -> str:
    """``expired`` as soon as the hour is over, even before the row is marked."""
    now = now or timezone.now()
    if upload.status == UploadStatus.PENDING and now >= upload.expires_at:
        return UploadStatus.EXPIRED
    return upload.status


def received_bytes(upload: Upload) -> int:
    return int(upload.parts.aggregate(total=Sum("bytes"))["total"] or 0)


def _error(status: int, code: str, message: str, param: str | None = None) -> ApiError:
    return ApiError(status=status, code=code, message=message, param=param)


def _state_error(upload: Upload) -> ApiError:
    status = effective_status(upload)
    return _error(
        409, f"upload_{status}", f"The upload is '{status}'; only a pending upload can change."
    )


def _locked(upload: Upload) -> Upload:
    """The upload re-read under its row lock (inside a transaction); 409 unless pending."""
    locked = (
        Upload.objects.for_org(upload.org)
        .select_for_update()
        .select_related("org")
        .get(pk=upload.pk)
    )
    if effective_status(locked) != UploadStatus.PENDING:
        raise _state_error(locked)
    return locked


def _discard_staged(upload: Upload) -> None:
    """Delete every staged byte of an upload that will never complete (or just did)."""
    storage = get_storage()
    storage.delete_prefix(parts_prefix(upload))
    if upload.s3_multipart_id:
        storage.abort_multipart(raw_key(upload), upload.s3_multipart_id)


def expire_if_stale(upload: Upload) -> bool:
    """Mark a pending upload past its hour expired and delete its parts; True if it did.

    Called before every write (so an expired upload refuses parts with ``upload_expired``)
    and by :func:`expire_stale_uploads` for uploads nobody touches again.
    """
    if effective_status(upload) != UploadStatus.EXPIRED or upload.status == UploadStatus.EXPIRED:
        return False
    marked = (
        Upload.objects.for_org(upload.org)
        .filter(pk=upload.pk, status=UploadStatus.PENDING)
        .update(status=UploadStatus.EXPIRED)
    )
    upload.status = UploadStatus.EXPIRED
    if marked:
        _discard_staged(upload)
    return bool(marked)


def expire_stale_uploads(now=None) -> int:
    """Sweep: expire every pending upload past its hour, in all orgs (periodic task)."""
    now = now or timezone.now()
    stale = Upload.objects.unscoped_across_orgs().filter(
        status=UploadStatus.PENDING, expires_at__lte=now
    )
    return sum(expire_if_stale(upload) for upload in stale.select_related("org"))


# --- create ---------------------------------------------------------------------------------


def create_upload(
    *,
    org: Organization,
    filename: str,
    purpose: str,
    size: int,
    mime_type: str,
    api_key: ApiKey | None = None,
) -> Upload:
    """Check the size limit and reserve the storage quota for ``size`` declared bytes."""
    limits = dataset_limits_for(org)
    if size > limits.max_upload_bytes:
        raise _error(
            413,
            "file_too_large",
            f"The upload declares {size} bytes; the limit is {limits.max_upload_bytes} bytes.",
            "bytes",
        )
    with reserve_quota(org) as reservation:
        reservation.check("storage_bytes", used=services.storage_bytes_used(org), requested=size)
        return Upload.objects.create(
            org=org,
            created_by_key=api_key,
            filename=services.clean_filename(filename),
            purpose=purpose,
            mime_type=mime_type,
            bytes=size,
            file_public_id=new_public_id(public_id_prefix(File)),
            expires_at=timezone.now() + UPLOAD_TTL,
        )


# --- parts through the API ----------------------------------------------------------------


def add_part(upload: Upload, stream: BinaryIO, size: int) -> UploadPart:
    """Store one part (any order, retries welcome) and record it.

    The bytes are stored before the row lock is taken (a 64 MiB part may take a while); the
    checks run again under the lock and the object is deleted if they now fail.
    """
    if size > MAX_PART_BYTES:
        raise _error(
            413, "part_too_large", f"A part is at most {MAX_PART_BYTES} bytes; got {size}.", "data"
        )
    expire_if_stale(upload)
    if effective_status(upload) != UploadStatus.PENDING:
        raise _state_error(upload)
    _check_room(upload, size)
    part_id = new_public_id(public_id_prefix(UploadPart))
    key = parts_prefix(upload) + part_id
    _store(key, stream, upload)
    try:
        with transaction.atomic():
            locked = _locked(upload)
            _check_room(locked, size)
            return UploadPart.objects.create(
                public_id=part_id, upload=locked, bytes=size, object_key=key
            )
    except BaseException:
        get_storage().delete(key)
        raise


def _check_room(upload: Upload, size: int) -> None:
    """A part may not take the upload past its declared bytes (the quota reserved)."""
    if upload.parts.count() >= MAX_PARTS:
        raise _error(400, "too_many_parts", f"An upload holds at most {MAX_PARTS} parts.", "data")
    received = received_bytes(upload)
    if received + size > upload.bytes:
        raise _error(
            400,
            "bytes_mismatch",
            f"This part ({size} bytes) would bring the upload to {received + size} bytes; "
            f"it declared {upload.bytes}.",
            "data",
        )


def _store(key: str, stream: BinaryIO, upload: Upload) -> None:
    try:
        get_storage().put(key, stream)
    except Exception:
        logger.exception("storing a part of %s failed", upload.public_id)
        get_storage().delete(key)
        raise _error(
            503, "storage_unavailable", "The part could not be stored; please retry it."
        ) from None


# --- presigned S3 parts -----------------------------------------------------------------------


def presign_parts(upload: Upload, part_numbers: list[int]) -> list[PresignedPart]:
    """PUT URLs for parts of the upload's S3 multipart upload (created on first call)."""
    storage = get_storage()
    if not storage.supports_presigned_urls:
        raise _error(
            400,
            "presign_unavailable",
            "Presigned part URLs need S3 object storage; this server stores objects in a local "
            "folder. Send parts with POST /v1/uploads/{id}/parts instead.",
        )
    expire_if_stale(upload)
    with transaction.atomic():
        locked = _locked(upload)
        if not locked.s3_multipart_id:
            locked.s3_multipart_id = storage.create_multipart(raw_key(locked))
            locked.save(update_fields=["s3_multipart_id"])
    # URLs die with the upload: a part PUT after the hour is refused by S3 itself.
    seconds = max(1, int((locked.expires_at - timezone.now()).total_seconds()))
    expires_at = int(timezone.now().timestamp()) + seconds
    return [
        PresignedPart(
            part_number=n,
            url=storage.presigned_part_url(raw_key(locked), locked.s3_multipart_id, n, seconds),
            expires_at=expires_at,
        )
        for n in part_numbers
    ]


# --- complete / cancel ----------------------------------------------------------------------


def complete_upload(
    upload: Upload,
    *,
    part_ids: list[str] | None = None,
    parts: list[CompletedPart] | None = None,
    md5: str | None = None,
    api_key: ApiKey | None = None,
    request: HttpRequest | None = None,
) -> Upload:
    """Assemble the parts into the quarantine object and create the File (scrub queued).

    Any refusal (unknown part, wrong size, md5) leaves the upload pending and its parts in
    place, so the client can fix the request and complete again.
    """
    expire_if_stale(upload)
    with transaction.atomic():
        locked = _locked(upload)
        if part_ids is not None:
            size = _assemble_api_parts(locked, part_ids, md5)
        else:
            size = _assemble_s3_parts(locked, parts or [])
        file = services.new_file_row(
            org=locked.org,
            size=size,
            filename=locked.filename,
            purpose=locked.purpose,
            api_key=api_key,
            public_id=locked.file_public_id,
        )
        locked.file, locked.status = file, UploadStatus.COMPLETED
        locked.save(update_fields=["file", "status"])
        services.announce_upload(
            file, api_key=api_key, request=request, metadata={"upload": locked.public_id}
        )
        transaction.on_commit(lambda: get_storage().delete_prefix(parts_prefix(locked)))
    return locked


def _assemble_api_parts(upload: Upload, part_ids: list[str], md5: str | None) -> int:
    by_id = {part.public_id: part for part in upload.parts.all()}
    seen: set[str] = set()
    for index, part_id in enumerate(part_ids):
        if part_id in seen:
            raise _error(
                400, "duplicate_part", f"Part {part_id} is listed twice.", f"part_ids.{index}"
            )
        if part_id not in by_id:
            raise _error(
                400, "unknown_part", f"No part {part_id} in this upload.", f"part_ids.{index}"
            )
        seen.add(part_id)
    chosen = [by_id[part_id] for part_id in part_ids]
    _check_total(upload, sum(part.bytes for part in chosen), "part_ids")
    storage = get_storage()
    digest = hashlib.md5(usedforsecurity=False)
    reader = ConcatenatedReader([_opener(storage, p.object_key) for p in chosen], digest)
    try:
        size = storage.put(raw_key(upload), reader)
    except Exception:
        logger.exception("assembling %s failed", upload.public_id)
        storage.delete(raw_key(upload))
        raise _error(
            503, "storage_unavailable", "The upload could not be assembled; please retry."
        ) from None
    if size != upload.bytes:  # storage lost bytes on the way: keep nothing, let them retry
        storage.delete(raw_key(upload))
        logger.error("assembling %s stored %d of %d bytes", upload.public_id, size, upload.bytes)
        raise _error(503, "storage_unavailable", "The upload could not be assembled; please retry.")
    if md5 and digest.hexdigest() != md5.lower():
        storage.delete(raw_key(upload))
        raise _error(
            400,
            "md5_mismatch",
            f"The assembled bytes have md5 {digest.hexdigest()}, not {md5.lower()}.",
            "md5",
        )
    return size


def _opener(storage, key: str):
    return lambda: storage.open(key)


def _assemble_s3_parts(upload: Upload, parts: list[CompletedPart]) -> int:
    if not upload.s3_multipart_id:
        raise _error(
            400,
            "no_presigned_parts",
            "`parts` completes a presigned (S3) upload; request POST "
            "/v1/uploads/{id}/presigned_parts first, or complete with `part_ids`.",
            "parts",
        )
    storage, key = get_storage(), raw_key(upload)
    try:
        received = storage.list_parts(key, upload.s3_multipart_id)
    except MultipartError as exc:
        raise _error(400, exc.code, exc.message, "parts") from None
    for index, part in enumerate(parts):
        if part.part_number not in received:
            raise _error(
                400,
                "unknown_part",
                f"Part number {part.part_number} was never PUT to its presigned URL.",
                f"parts.{index}.part_number",
            )
        if received[part.part_number].etag != normalize_etag(part.etag):
            raise _error(
                400,
                "invalid_part",
                f"Part {part.part_number}'s ETag does not match the bytes S3 holds for it "
                "(was it PUT again?).",
                f"parts.{index}.etag",
            )
    _check_total(upload, sum(received[p.part_number].size for p in parts), "parts")
    try:
        size = storage.complete_multipart(key, upload.s3_multipart_id, parts)
    except MultipartError as exc:
        index = next((i for i, p in enumerate(parts) if p.part_number == exc.part_number), None)
        raise _error(
            400, exc.code, exc.message, "parts" if index is None else f"parts.{index}"
        ) from None
    if size != upload.bytes:  # S3 disagrees with its own part listing: keep nothing
        storage.delete(key)
        raise _error(500, "assembly_size_mismatch", "The assembled object has the wrong size.")
    return size


def _check_total(upload: Upload, total: int, param: str) -> None:
    if total != upload.bytes:
        raise _error(
            400,
            "bytes_mismatch",
            f"The parts add up to {total} bytes; the upload declared {upload.bytes}.",
            param,
        )


def cancel_upload(upload: Upload) -> Upload:
    """Cancel a pending upload; its parts are deleted once the cancel is committed."""
    expire_if_stale(upload)
    with transaction.atomic():
        locked = _locked(upload)
        locked.status = UploadStatus.CANCELLED
        locked.save(update_fields=["status"])
        transaction.on_commit(lambda: _discard_staged(locked))
    return locked
