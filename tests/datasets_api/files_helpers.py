"""Helpers for the Files API tests: sample uploads (good and bad) and storage set-up.

A plain module, not conftest.py: the repository root owns conftest.py. Test modules import
the fixtures they use from here.
"""

from __future__ import annotations

import gzip
import io
import json
import uuid
import zipfile
import zlib

import pytest

from longtune.storage import QUARANTINE, get_storage, org_prefix

# PII planted in the good upload; none of it may survive scrubbing.
EMAIL = "jane.doe@acme-corp.com"
PHONE = "+1 (415) 555-2671"
PHONE_OTHER_FORMAT = "415-555-2671"  # the same number: must map to the same placeholder
CARD = "4111 1111 1111 1111"
RAW_SECRETS = (EMAIL, PHONE, PHONE_OTHER_FORMAT, CARD, "4111111111111111", "555-2671")


def chat(user: str, assistant: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "You are a support agent."},
            {"role": "user", "content": user},
            {"role": "assistant", "content": assistant},
        ]
    }


def jsonl(objects) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objects)


def good_chat_examples(n: int = 12) -> list[dict]:
    rows = [
        chat(f"My email is {EMAIL}, call me at {PHONE}.", f"Thanks, I will write to {EMAIL}."),
        chat(
            f"Charge card {CARD} please.", f"Card ending 1111 noted; calling {PHONE_OTHER_FORMAT}."
        ),
    ]
    rows += [
        chat(f"Question {i}: how long is a context?", f"Answer {i}: long.") for i in range(n - 2)
    ]
    return rows


def good_upload() -> bytes:
    return jsonl(good_chat_examples())


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6)


def truncated_gzip() -> bytes:
    packed = gzip_bytes(good_upload() * 20)
    return packed[: len(packed) // 2]


def invalid_utf8() -> bytes:
    rows = good_chat_examples()
    lines = [json.dumps(r).encode() for r in rows]
    lines[3] = lines[3].replace(b"Question", b"Qu\xff\xfeestion")
    return b"\n".join(lines) + b"\n"


def ten_mb_single_line() -> bytes:
    """Line 3 is a 10 MiB example (over max_line_bytes = 8 MiB)."""
    huge = json.dumps(chat("x" * (10 * 1024 * 1024), "ok")).encode()
    rows = [json.dumps(r).encode() for r in good_chat_examples()]
    return b"\n".join([*rows[:2], huge, *rows[2:]]) + b"\n"


def json_array() -> bytes:
    return json.dumps(good_chat_examples(), indent=2).encode()


def unknown_role() -> bytes:
    rows = good_chat_examples()
    rows[4]["messages"][1]["role"] = "customer"
    return jsonl(rows)


def gzip_bomb(decompressed_mib: int = 128) -> bytes:
    """gzip of zeros: ~1000:1, far over max_compression_ratio (200:1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1024 * 1024)
    out = [compressor.compress(chunk) for _ in range(decompressed_mib)]
    return b"".join(out) + compressor.flush()


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("train.jsonl", good_upload())
    return buffer.getvalue()


# upload maker, expected error code, expected line (None: a file-level error)
BAD_FILES = {
    "truncated_gzip": (truncated_gzip, "invalid_compression", None),
    "invalid_utf8": (invalid_utf8, "invalid_utf8", 4),
    "ten_mb_line": (ten_mb_single_line, "line_too_long", 3),
    "json_array": (json_array, "json_array_not_jsonl", 1),
    "unknown_role": (unknown_role, "unknown_role", 5),
    "gzip_bomb": (gzip_bomb, "decompression_bomb", None),
    "zip_archive": (zip_archive, "unsupported_compression", None),
}


def quarantined_keys(org) -> list[str]:
    return [info.key for info in get_storage().list(f"{org_prefix(org.public_id)}{QUARANTINE}/")]


def stored_keys(org) -> list[str]:
    return [info.key for info in get_storage().list(org_prefix(org.public_id))]


def use_storage(settings, *, bucket: str, endpoint: str) -> None:
    """Point this process's get_storage() at ``bucket`` on the real S3 server."""
    settings.S3_BUCKET = bucket
    settings.S3_ENDPOINT_URL = endpoint
    get_storage.cache_clear()


@pytest.fixture
def s3_files(settings, s3_endpoint):
    """A fresh bucket on the real moto S3 server behind get_storage() for this test."""
    use_storage(settings, bucket=f"lt-files-{uuid.uuid4().hex[:12]}", endpoint=s3_endpoint)
    yield get_storage()
    get_storage.cache_clear()
