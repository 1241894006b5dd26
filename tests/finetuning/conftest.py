"""Fixtures for the worker-backed fine-tuning tests."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from longtune.storage import get_storage

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_ORIGINAL_CONTEXT = 64  # trained at 256 with YaRN: a 4× context extension
# Worker settings for fast, observable runs: a checkpoint every 2 steps, a metrics event every
# step, a heartbeat every second.
FAST_WORKER_ENV = {
    "FINETUNE_CHECKPOINT_EVERY_STEPS": "2",
    "FINETUNE_METRICS_EVENT_SECONDS": "0",
    "FINETUNE_HEARTBEAT_SECONDS": "1",
    "OMP_NUM_THREADS": "1",
}


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory) -> Path:
    """The tiny Llama (2 layers, hidden 64), original context 64, built once per session."""
    out = tmp_path_factory.mktemp("tiny-base") / "tiny-llama"
    subprocess.run(
        [sys.executable, "-m", "gpu_runtime.tiny", "--out", str(out),
         "--max-position-embeddings", str(TINY_ORIGINAL_CONTEXT)],
        cwd=REPO_ROOT, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return out


@pytest.fixture
def shared_storage(settings, worker_env):
    """This process (and the live server thread) uses the workers' bucket on the S3 server."""
    settings.S3_BUCKET = worker_env["S3_BUCKET"]
    settings.S3_ENDPOINT_URL = worker_env["S3_ENDPOINT_URL"]
    get_storage.cache_clear()
    yield get_storage()
    get_storage.cache_clear()


def wait_for(predicate, *, timeout: float, what: str, worker=None, interval: float = 0.2):
    """Poll until ``predicate()`` is truthy; fail with the worker's log tail otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    log = worker.read_log()[-6000:] if worker is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{log}")
