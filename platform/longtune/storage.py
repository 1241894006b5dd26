"""Object storage behind one interface: a local folder (embedded default) or S3 via boto3.

Keys are plain strings like ``orgs/<org-id>/files/<file-id>/scrubbed.jsonl``; every tenant's
objects live under its own prefix (:func:`org_prefix`). Reads and writes stream: nothing here
loads a whole object into memory, because uploads can be gigabytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, BinaryIO, Protocol

CHUNK = 1024 * 1024
QUARANTINE = "quarantine"  # raw, unscrubbed uploads: only the scrubber may read them


def org_prefix(org_public_id: str) -> str:
    return f"orgs/{org_public_id}/"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class ObjectNotFound(KeyError):
    """The key does not exist."""


class PresignUnavailable(RuntimeError):
    """This storage cannot hand out presigned URLs (the local folder has no HTTP endpoint)."""


class MultipartError(ValueError):
    """A multipart upload cannot be completed as asked.

    ``code`` is one of ``no_such_upload``, ``invalid_part`` (missing part or wrong ETag),
    ``invalid_part_order`` and ``part_too_small`` (S3: every part but the last is >= 5 MiB);
    ``part_number`` names the part at fault when known.
    """

    def __init__(self, code: str, message: str, part_number: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.part_number = code, message, part_number


@dataclass(frozen=True)
class CompletedPart:
    """One part of a multipart upload as the client reports it at completion."""

    part_number: int
    etag: str


@dataclass(frozen=True)
class PartInfo:
    """One part already received by a multipart upload (ETag bare, see normalize_etag)."""

    size: int
    etag: str


def normalize_etag(etag: str) -> str:
    """ETags travel quoted (HTTP header) or bare (JSON); compare them bare."""
    return etag.strip().strip('"')


class ObjectStorage(Protocol):
    supports_presigned_urls: bool

    def put(self, key: str, stream: BinaryIO) -> int: ...
    def put_bytes(self, key: str, data: bytes) -> int: ...
    def open(self, key: str) -> BinaryIO: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def delete(self, key: str) -> None: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...
    def download_dir(self, prefix: str, dest: Path) -> Path: ...
    def upload_dir(self, src: Path, prefix: str) -> int: ...
    # Multipart uploads (S3 semantics): parts are numbered, assembled in part-number order.
    def create_multipart(self, key: str) -> str: ...
    def presigned_part_url(
        self, key: str, upload_id: str, part_number: int, expires: int
    ) -> str: ...
    def upload_part(self, key: str, upload_id: str, part_number: int, stream: BinaryIO) -> str: ...
    def complete_multipart(self, key: str, upload_id: str, parts: list[CompletedPart]) -> int: ...
    def abort_multipart(self, key: str, upload_id: str) -> None: ...
    def list_parts(self, key: str, upload_id: str) -> dict[int, PartInfo]: ...


MULTIPART_DIR = ".multipart"  # LocalObjectStorage's staging area for unfinished multipart uploads
MAX_PART_NUMBER = 10_000  # S3's limit, kept by the local folder too


def check_part_order(parts: list[CompletedPart]) -> None:
    """S3 requires strictly ascending part numbers in 1..10000 at completion."""
    if not parts:
        raise MultipartError("invalid_part", "A multipart upload needs at least one part.")
    previous = 0
    for part in parts:
        if not 1 <= part.part_number <= MAX_PART_NUMBER or part.part_number <= previous:
            raise MultipartError(
                "invalid_part_order",
                "Part numbers must be ascending and unique, each in 1..10000.",
                part.part_number,
            )
        previous = part.part_number


class LocalObjectStorage:
    """Files under a root folder; writes are atomic (temp file + rename).

    Multipart uploads stage their parts under ``<root>/.multipart/<upload id>/`` (never listed
    as objects) and are concatenated into the key on completion, like S3 does server-side.
    """

    supports_presigned_urls = False  # no HTTP endpoint a client could PUT parts to

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not str(path).startswith(str(self.root.resolve()) + os.sep):
            raise ValueError(f"key escapes the storage root: {key!r}")
        return path

    def put(self, key: str, stream: BinaryIO) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    out.write(chunk)
                    written += len(chunk)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return written

    def put_bytes(self, key: str, data: bytes) -> int:
        import io

        return self.put(key, io.BytesIO(data))

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        keys = [info.key for info in self.list(prefix)]
        for key in keys:
            self.delete(key)
        return len(keys)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self.root.resolve()
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith(".upload-"):
                key = path.relative_to(base).as_posix()
                if key.startswith(prefix) and not key.startswith(MULTIPART_DIR + "/"):
                    yield ObjectInfo(key=key, size=path.stat().st_size)

    def download_dir(self, prefix: str, dest: Path) -> Path:
        return _download_dir(self, prefix, dest)

    def upload_dir(self, src: Path, prefix: str) -> int:
        return _upload_dir(self, src, prefix)

    # --- multipart ---

    def _staging(self, key: str, upload_id: str) -> Path:
        """The staging folder of ``upload_id``, which must belong to ``key``."""
        if not upload_id.isalnum():
            raise MultipartError("no_such_upload", f"No multipart upload {upload_id!r}.")
        staging = self.root / MULTIPART_DIR / upload_id
        try:
            owner = (staging / "key").read_text()
        except FileNotFoundError:
            raise MultipartError("no_such_upload", f"No multipart upload {upload_id!r}.") from None
        if owner != key:
            raise MultipartError("no_such_upload", f"Upload {upload_id!r} is not for {key!r}.")
        return staging

    def create_multipart(self, key: str) -> str:
        self._path(key)  # refuse a key outside the root now, not at completion
        upload_id = uuid.uuid4().hex
        staging = self.root / MULTIPART_DIR / upload_id
        staging.mkdir(parents=True)
        (staging / "key").write_text(key)
        return upload_id

    def presigned_part_url(self, key: str, upload_id: str, part_number: int, expires: int) -> str:
        raise PresignUnavailable("the local object folder has no URL a client could PUT to")

    def upload_part(self, key: str, upload_id: str, part_number: int, stream: BinaryIO) -> str:
        if not 1 <= part_number <= MAX_PART_NUMBER:
            raise MultipartError("invalid_part", "Part numbers are 1..10000.", part_number)
        staging = self._staging(key, upload_id)
        digest = hashlib.md5(usedforsecurity=False)
        fd, tmp = tempfile.mkstemp(dir=staging, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
            os.replace(tmp, staging / f"part-{part_number:05d}")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        etag = digest.hexdigest()
        (staging / f"etag-{part_number:05d}").write_text(etag)
        return f'"{etag}"'

    def complete_multipart(self, key: str, upload_id: str, parts: list[CompletedPart]) -> int:
        staging = self._staging(key, upload_id)
        check_part_order(parts)
        paths = []
        for part in parts:
            etag_file = staging / f"etag-{part.part_number:05d}"
            if not etag_file.exists() or etag_file.read_text() != normalize_etag(part.etag):
                raise MultipartError(
                    "invalid_part",
                    f"Part {part.part_number} was not uploaded or its ETag does not match.",
                    part.part_number,
                )
            paths.append(staging / f"part-{part.part_number:05d}")
        size = self.put(key, ConcatenatedReader([partial(p.open, "rb") for p in paths]))
        shutil.rmtree(staging, ignore_errors=True)
        return size

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            shutil.rmtree(self._staging(key, upload_id))
        except MultipartError:
            pass  # already completed or aborted: nothing left to remove

    def list_parts(self, key: str, upload_id: str) -> dict[int, PartInfo]:
        staging = self._staging(key, upload_id)
        return {
            int(p.name[5:]): PartInfo(
                size=p.stat().st_size, etag=(staging / f"etag-{p.name[5:]}").read_text()
            )
            for p in staging.glob("part-*")
        }


class S3ObjectStorage:
    """S3 (or any S3-compatible server) through boto3; multipart uploads for big objects."""

    supports_presigned_urls = True

    def __init__(self, bucket: str, *, endpoint_url: str | None = None, region: str = "us-east-1"):
        import boto3
        from boto3.s3.transfer import TransferConfig

        self.bucket = bucket
        self.client = boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region)
        self._transfer = TransferConfig(
            multipart_threshold=8 * CHUNK, multipart_chunksize=8 * CHUNK
        )
        self._ensure_bucket()

    def _ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put(self, key: str, stream: BinaryIO) -> int:
        counter = _CountingReader(stream)
        self.client.upload_fileobj(counter, self.bucket, key, Config=self._transfer)
        return counter.count

    def put_bytes(self, key: str, data: bytes) -> int:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        return len(data)

    def open(self, key: str) -> BinaryIO:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise ObjectNotFound(key) from exc
            raise

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
            return True
        except ObjectNotFound:
            return False

    def size(self, key: str) -> int:
        from botocore.exceptions import ClientError

        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            raise ObjectNotFound(key) from exc

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def delete_prefix(self, prefix: str) -> int:
        keys = [info.key for info in self.list(prefix)]
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})
        return len(keys)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield ObjectInfo(key=obj["Key"], size=int(obj["Size"]))

    def presigned_url(
        self, key: str, method: str = "get_object", expires: int = 3600, **params
    ) -> str:
        return self.client.generate_presigned_url(
            method, Params={"Bucket": self.bucket, "Key": key, **params}, ExpiresIn=expires
        )

    def download_dir(self, prefix: str, dest: Path) -> Path:
        return _download_dir(self, prefix, dest)

    def upload_dir(self, src: Path, prefix: str) -> int:
        return _upload_dir(self, src, prefix)

    # --- multipart: S3's own; clients may PUT parts straight to presigned URLs ---

    def create_multipart(self, key: str) -> str:
        return self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]

    def presigned_part_url(self, key: str, upload_id: str, part_number: int, expires: int) -> str:
        return self.presigned_url(
            key, "upload_part", expires, UploadId=upload_id, PartNumber=part_number
        )

    def upload_part(self, key: str, upload_id: str, part_number: int, stream: BinaryIO) -> str:
        from botocore.exceptions import ClientError

        try:
            response = self.client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=part_number, Body=stream
            )
        except ClientError as exc:
            raise _multipart_error(exc, part_number) from exc
        return response["ETag"]

    def complete_multipart(self, key: str, upload_id: str, parts: list[CompletedPart]) -> int:
        from botocore.exceptions import ClientError

        check_part_order(parts)
        listing = [
            {"PartNumber": p.part_number, "ETag": f'"{normalize_etag(p.etag)}"'} for p in parts
        ]
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": listing},
            )
        except ClientError as exc:
            raise _multipart_error(exc, None) from exc
        return self.size(key)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if _error_code(exc) not in {"NoSuchUpload", "404"}:
                raise

    def list_parts(self, key: str, upload_id: str) -> dict[int, PartInfo]:
        from botocore.exceptions import ClientError

        parts: dict[int, PartInfo] = {}
        try:
            paginator = self.client.get_paginator("list_parts")
            for page in paginator.paginate(Bucket=self.bucket, Key=key, UploadId=upload_id):
                for part in page.get("Parts", []):
                    parts[int(part["PartNumber"])] = PartInfo(
                        size=int(part["Size"]), etag=normalize_etag(part["ETag"])
                    )
        except ClientError as exc:
            raise _multipart_error(exc, None) from exc
        return parts


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


# S3 error code -> MultipartError code
_S3_MULTIPART_ERRORS = {
    "NoSuchUpload": "no_such_upload",
    "InvalidPart": "invalid_part",
    "InvalidPartOrder": "invalid_part_order",
    "EntityTooSmall": "part_too_small",
}


def _multipart_error(exc: Exception, part_number: int | None) -> Exception:
    """An S3 ClientError about the client's parts -> MultipartError; anything else as is."""
    code = _S3_MULTIPART_ERRORS.get(_error_code(exc))
    if code is None:
        return exc
    message = getattr(exc, "response", {}).get("Error", {}).get("Message") or str(exc)
    return MultipartError(code, message, part_number)


class ConcatenatedReader:
    """Several objects read as one stream, each opened only when reached; optional digest.

    Why: assembling an upload's parts must stream through ``put`` (S3: multipart), never join
    gigabytes in memory, and must not hold hundreds of S3 connections open at once. ``read(n)``
    returns exactly ``n`` bytes until the end, across part boundaries: boto3's uploader takes
    a short read for the end of the stream.
    """

    def __init__(self, openers: list[Callable[[], BinaryIO]], digest: Any = None):
        self._openers, self._current, self.digest = list(openers), None, digest

    def read(self, size: int = -1) -> bytes:
        pieces: list[bytes] = []
        wanted = size if size is not None and size >= 0 else None
        while wanted is None or wanted > 0:
            piece = self._read_some(CHUNK if wanted is None else min(wanted, CHUNK))
            if not piece:
                break
            pieces.append(piece)
            if wanted is not None:
                wanted -= len(piece)
        data = b"".join(pieces)
        if self.digest is not None:
            self.digest.update(data)
        return data

    def _read_some(self, size: int) -> bytes:
        while True:
            if self._current is None:
                if not self._openers:
                    return b""
                self._current = self._openers.pop(0)()
            data = self._current.read(size)
            if data:
                return data
            self._current.close()
            self._current = None

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
        self._current, self._openers = None, []


class _CountingReader:
    def __init__(self, stream: BinaryIO):
        self.stream, self.count = stream, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        return data


def _download_dir(storage: ObjectStorage, prefix: str, dest: Path) -> Path:
    prefix = prefix.rstrip("/") + "/"
    dest.mkdir(parents=True, exist_ok=True)
    for info in storage.list(prefix):
        target = dest / info.key[len(prefix) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        with storage.open(info.key) as src, target.open("wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
    return dest


def _upload_dir(storage: ObjectStorage, src: Path, prefix: str) -> int:
    prefix = prefix.rstrip("/") + "/"
    count = 0
    for path in sorted(Path(src).rglob("*")):
        if path.is_file():
            with path.open("rb") as stream:
                storage.put(prefix + path.relative_to(src).as_posix(), stream)
            count += 1
    return count


def sha256_of(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


@lru_cache(maxsize=1)
def get_storage() -> ObjectStorage:
    """The configured storage: S3 when S3_BUCKET is set, else the local folder under var/."""
    from django.conf import settings

    if settings.S3_BUCKET:
        return S3ObjectStorage(
            settings.S3_BUCKET, endpoint_url=settings.S3_ENDPOINT_URL, region=settings.S3_REGION
        )
    return LocalObjectStorage(settings.LOCAL_OBJECTS_DIR)
