"""gzip/zstd uploads: detection by magic bytes, truncation, bombs."""

from __future__ import annotations

import gzip
import io
import zipfile

import pytest
import zstandard

from longtune.datasets.decompress import Compression
from longtune.datasets.limits import MIB
from longtune.datasets.validation import validate_and_scrub
from tests.datasets.dataset_helpers import chat, jsonl, process

DATA = jsonl(*[chat(f"question {i}", f"answer {i}") for i in range(2000)])


@pytest.mark.parametrize(
    ("blob", "compression"),
    [
        (DATA, Compression.NONE),
        (gzip.compress(DATA), Compression.GZIP),
        (
            gzip.compress(DATA[:50_000]) + gzip.compress(DATA[50_000:]),
            Compression.GZIP,
        ),  # multi-member
        (zstandard.ZstdCompressor().compress(DATA), Compression.ZSTD),
        (
            zstandard.ZstdCompressor().compress(DATA[:7])
            + zstandard.ZstdCompressor().compress(DATA[7:]),
            Compression.ZSTD,
        ),  # multi-frame
    ],
    ids=["plain", "gzip", "gzip-multi-member", "zstd", "zstd-multi-frame"],
)
def test_compressed_uploads_decode_identically(blob, compression):
    report, out = process(blob)
    assert report.valid, report.errors
    assert report.compression is compression
    assert out == DATA and report.examples == 2000
    assert report.bytes_in == len(blob) and report.bytes_decompressed == len(DATA)


@pytest.mark.parametrize(
    "blob",
    [
        gzip.compress(DATA)[:-100],
        gzip.compress(DATA)[:5000],
        zstandard.ZstdCompressor().compress(DATA)[:-50],
        b"\x1f\x8b" + b"\x00" * 40,
        b"\x28\xb5\x2f\xfd" + b"garbage-garbage",
    ],
    ids=["gzip-tail-cut", "gzip-half", "zstd-tail-cut", "gzip-garbage", "zstd-garbage"],
)
def test_truncated_or_corrupt_streams_are_invalid_compression(blob):
    report, _ = process(blob)
    assert report.fatal is not None and report.fatal.code == "invalid_compression"
    assert not report.valid


def test_zip_is_refused_by_magic_bytes():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("train.jsonl", DATA)
    report, _ = process(buffer.getvalue())
    assert report.fatal.code == "unsupported_compression" and "zip" in report.fatal.message


def _gzip_zero_bomb(total_bytes: int) -> bytes:
    """gzip of `total_bytes` zeros, built as repeated 16 MiB members (never held inflated)."""
    member = gzip.compress(bytes(16 * MIB), compresslevel=9)
    return member * (total_bytes // (16 * MIB))


def test_one_gigabyte_zero_bomb_is_stopped_by_ratio_guard_with_default_limits():
    bomb = _gzip_zero_bomb(1024 * MIB)  # ~1 MB on the wire, 1 GiB inflated
    report, out = process(bomb)
    assert report.fatal.code == "decompression_bomb"
    assert report.fatal.param == "max_compression_ratio"
    assert report.bytes_decompressed < 64 * MIB  # stopped early, not after a GiB
    assert out == b""


def test_zstd_bomb_is_stopped_too():
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(256 * MIB))
    report, _ = process(bomb)
    assert report.fatal.code == "decompression_bomb"
    assert report.bytes_decompressed < 64 * MIB


def test_max_decompressed_bytes_guard_on_a_normal_ratio_file():
    blob = gzip.compress(DATA)
    report, _ = process(blob, max_decompressed_bytes=len(DATA) // 2)
    assert report.fatal.code == "decompression_bomb"
    assert report.fatal.param == "max_decompressed_bytes"


def test_realistic_text_ratio_passes_ratio_guard():
    text = jsonl(
        *[
            chat(f"Tell me about item {i} in the catalogue", f"Item {i} costs {i % 97} euros.")
            for i in range(150_000)
        ]
    )
    assert len(text) > 16 * MIB  # past the grace window, so the ratio is actually judged
    blob = zstandard.ZstdCompressor(level=3).compress(text)
    report = validate_and_scrub(io.BytesIO(blob), None, scrub=False)
    assert report.valid, report.errors[:3]
    assert report.bytes_decompressed == len(text)
