"""Helpers for the pure dataset-module tests (no database needed).

A plain module, not conftest.py: the repository root owns conftest.py.
"""

from __future__ import annotations

import io
import json

from longtune.datasets.limits import DatasetLimits
from longtune.datasets.validation import ProcessingReport, validate_and_scrub


def chat(user: str = "Hello there", assistant: str = "Hi, how can I help?") -> dict:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    }


def jsonl(*objects) -> bytes:
    return b"".join(
        (o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n" for o in objects
    )


def process(data: bytes, **limit_overrides) -> tuple[ProcessingReport, bytes]:
    limit_overrides.setdefault("min_examples", 1)
    dst = io.BytesIO()
    report = validate_and_scrub(io.BytesIO(data), dst, limits=DatasetLimits(**limit_overrides))
    return report, dst.getvalue()
