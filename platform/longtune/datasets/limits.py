"""Size and count limits for one dataset upload.

Why explicit and in one place: every limit is a denial-of-service guard for a
CPU worker that handles untrusted bytes, and each one maps to a documented
error code (see errors.py). Orgs on bigger plans get a bigger instance of this
dataclass, never a code path without limits.
"""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


@dataclass(frozen=True)
class DatasetLimits:
    # Raw bytes read from the upload (compressed size for gzip/zstd) -> file_too_large.
    max_upload_bytes: int = 8 * GIB
    # Bytes after decompression -> decompression_bomb.
    max_decompressed_bytes: int = 32 * GIB
    # decompressed/compressed ratio -> decompression_bomb. JSONL text compresses
    # 3-15x (zstd -19 on templated data ~50x); gzip of zeros is ~1000x.
    max_compression_ratio: float = 200.0
    # The ratio is only judged after this much output: a tiny file may compress
    # extremely well and is harmless anyway.
    ratio_grace_bytes: int = 16 * MIB
    # One example; 8 MiB is ~2M tokens, beyond any context length we train.
    max_line_bytes: int = 8 * MIB
    max_lines: int = 10_000_000
    min_examples: int = 10
    # Errors listed in the report; all errors are still counted per code.
    max_errors_listed: int = 20

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_decompressed_bytes", "max_line_bytes", "max_lines"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_compression_ratio <= 1:
            raise ValueError("max_compression_ratio must be > 1")
