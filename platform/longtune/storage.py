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
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Protocol

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


class ObjectStorage(Protocol):
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


class LocalObjectStorage:
    """Files under a root folder; writes are atomic (temp file + rename)."""

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
                if key.startswith(prefix):
                    yield ObjectInfo(key=key, size=path.stat().st_size)

    def download_dir(self, prefix: str, dest: Path) -> Path:
        return _download_dir(self, prefix, dest)

    def upload_dir(self, src: Path, prefix: str) -> int:
        return _upload_dir(self, src, prefix)


class S3ObjectStorage:
    """S3 (or any S3-compatible server) through boto3; multipart uploads for big objects."""

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
