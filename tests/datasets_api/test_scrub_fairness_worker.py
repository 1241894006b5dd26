"""Fairness between tenants with real worker processes, as scripts/run.sh runs them (a prefork
cpu worker of two slots, a solo gpu worker), Redis, PostgreSQL and moto's S3 server:

- org A's 256 MB upload is scrubbing while org B's small file is processed within seconds
  (and org A's own second file waits for A's slot);
- an upload is scrubbed while a training job runs, and the job then stops at the soft time
  limit of GPU work with the code time_limit_exceeded (the solo pool's SIGALRM path);
- a scrub past its soft time limit is rejected with time_limit_exceeded (the prefork path).
"""

from __future__ import annotations

import io
import random
import time
import zlib
from pathlib import Path

import pytest

from longtune.datasets.models import File, FileStatus
from longtune.datasets.services import accept_upload
from longtune.finetuning.models import FineTuningJob
from longtune.tenancy.models import OrgQuota
from tests.conftest import api_client
from tests.datasets_api.files_helpers import good_upload, quarantined_keys, use_storage
from tests.finetuning import conftest as finetuning_fixtures
from tests.finetuning.conftest import FAST_WORKER_ENV, TINY_ORIGINAL_CONTEXT, wait_for
from tests.finetuning.helpers import chat_examples, make_base_model, make_file
from tests.fixtures.services import EMBEDDED_CPU_WORKER, NAME_MODEL_PRELOADED, REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
MIB = 1024 * 1024
tiny_base_dir = finetuning_fixtures.tiny_base_dir  # the tiny Llama, built once per session
SMALL_FILE_SECONDS = 20.0  # "within seconds" on a shared 2-core machine; the test prints the figure


@pytest.fixture
def shared_storage(settings, worker_env):
    use_storage(settings, bucket=worker_env["S3_BUCKET"], endpoint=worker_env["S3_ENDPOINT_URL"])
    yield


def big_chat_gzip(path: Path, decompressed_bytes: int, seed: int = 0) -> int:
    """Valid chat JSONL of ``decompressed_bytes``, gzip level 1, written to ``path``.

    Why this shape: a pool of 4,096 distinct ~500-byte lines (2 MB) is reshuffled per 2 MB
    block, so a repeat is almost never inside gzip's 32 KB window: the file compresses ~4:1
    like real text (far under the 200:1 bomb guard) yet takes seconds, not minutes, to build.
    Returns the decompressed size written.
    """
    rng = random.Random(seed)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
        for _ in range(2_000)
    ]

    def line(i: int) -> bytes:
        user = " ".join(rng.choices(words, k=40))
        answer = " ".join(rng.choices(words, k=40))
        return (
            f'{{"messages": [{{"role": "user", "content": "q{i} {user}"}}, '
            f'{{"role": "assistant", "content": "{answer}"}}]}}\n'
        ).encode()

    pool = [line(i) for i in range(4_096)]
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    written = 0
    with path.open("wb") as out:
        while written < decompressed_bytes:
            rng.shuffle(pool)
            block = b"".join(pool)
            out.write(compressor.compress(block))
            written += len(block)
        out.write(compressor.flush())
    return written


def upload(handle, path_or_bytes, filename: str) -> File:
    """The service the API view calls: quota, quarantine object, scrub queued on commit."""
    if isinstance(path_or_bytes, Path):
        size = path_or_bytes.stat().st_size
        with path_or_bytes.open("rb") as stream:
            return accept_upload(
                org=handle.org, stream=stream, size=size, filename=filename, purpose="fine-tune"
            )
    return accept_upload(
        org=handle.org,
        stream=io.BytesIO(path_or_bytes),
        size=len(path_or_bytes),
        filename=filename,
        purpose="fine-tune",
    )


def status(file: File) -> str:
    return File.objects.unscoped_across_orgs().get(pk=file.pk).status


def wait_processed(file: File, worker, timeout: float) -> float:
    started = time.monotonic()
    wait_for(
        lambda: status(file) in (FileStatus.PROCESSED, FileStatus.ERROR),
        timeout=timeout,
        what=f"{file.public_id} to be processed",
        worker=worker,
    )
    assert status(file) == FileStatus.PROCESSED, (
        File.objects.unscoped_across_orgs().get(pk=file.pk).error
    )
    return time.monotonic() - started


def test_run_sh_runs_the_cpu_worker_as_the_fixture_does():
    run_sh = (REPO_ROOT / "scripts" / "run.sh").read_text()
    assert (
        f'-Q cpu -P {EMBEDDED_CPU_WORKER["pool"]} -c "${{LONGTUNE_CPU_WORKER_SLOTS:-'
        f'{EMBEDDED_CPU_WORKER["concurrency"]}}}"' in run_sh
    )
    assert "-Q gpu -P solo" in run_sh  # training on a worker of its own


def test_huge_upload_of_one_org_does_not_hold_the_queue_for_another(
    make_org, start_worker, shared_storage, tmp_path
):
    org_a, org_b = make_org("Huge A", plan="pro"), make_org("Small B", plan="pro")
    big = tmp_path / "huge.jsonl.gz"
    decompressed = big_chat_gzip(big, 256 * MIB)
    print(
        f"256 MB upload: {decompressed / MIB:.0f} MiB JSONL, {big.stat().st_size / MIB:.1f} MiB gz"
    )
    worker = start_worker(**EMBEDDED_CPU_WORKER)
    worker.wait_for_log(NAME_MODEL_PRELOADED, count=EMBEDDED_CPU_WORKER["concurrency"])

    huge = upload(org_a, big, "huge.jsonl.gz")
    wait_for(
        lambda: status(huge) == FileStatus.PROCESSING,
        timeout=60,
        what="the huge file to start scrubbing",
        worker=worker,
    )
    own_second = upload(org_a, good_upload(), "a-second.jsonl")
    small = upload(org_b, good_upload(), "b-small.jsonl")

    seconds = wait_processed(small, worker, timeout=SMALL_FILE_SECONDS)
    print(f"org B's small file processed in {seconds:.1f} s while org A's 256 MB file scrubs")
    assert status(huge) == FileStatus.PROCESSING  # A's file really was scrubbing all along
    # Org A's second file waits for A's slot (untouched, raw bytes kept) instead of taking
    # the slot another org needs.
    assert status(own_second) == FileStatus.UPLOADED
    assert File.objects.for_org(org_a.org).get(pk=own_second.pk).raw_key in quarantined_keys(
        org_a.org
    )
    assert "at its limit of concurrent scrubs" in worker.read_log()  # deferred via the broker
    worker.kill()  # do not wait ~a minute for the 256 MB scrub to finish


def test_scrub_past_its_soft_time_limit_is_rejected_with_a_code(
    make_org, start_worker, shared_storage, tmp_path
):
    handle = make_org("Slow A", plan="pro")
    big = tmp_path / "slow.jsonl.gz"
    big_chat_gzip(big, 64 * MIB, seed=1)  # ~15 s of scrubbing: well past a 2 s limit
    worker = start_worker(
        **EMBEDDED_CPU_WORKER, SCRUB_TIME_LIMIT_SECONDS="2", TASK_HARD_TIME_LIMIT_GRACE_SECONDS="30"
    )
    file = upload(handle, big, "slow.jsonl.gz")
    wait_for(
        lambda: status(file) == FileStatus.ERROR,
        timeout=240,  # 2 s of limit; the rest is a fresh worker's start on a busy machine
        what="the time limit",
        worker=worker,
    )
    row = File.objects.for_org(handle.org).get(pk=file.pk)
    assert row.error["code"] == "time_limit_exceeded", row.error
    assert row.raw_key == "" and quarantined_keys(handle.org) == []
    assert "hit its soft time limit" in worker.read_log()


def test_upload_is_not_blocked_by_a_running_training_job(
    make_org, start_worker, shared_storage, tiny_base_dir
):
    handle = make_org("Busy Trainer", plan="pro")
    OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)
    make_base_model("tiny-fair", tiny_base_dir, original=TINY_ORIGINAL_CONTEXT, maximum=1024)
    cpu = start_worker(**EMBEDDED_CPU_WORKER)
    cpu.wait_for_log(NAME_MODEL_PRELOADED, count=EMBEDDED_CPU_WORKER["concurrency"])
    # The training worker of scripts/run.sh (solo), with GPU work limited to 90 s so the job
    # also shows the solo pool's soft time limit: it must fail with time_limit_exceeded.
    gpu = start_worker("gpu", **FAST_WORKER_ENV, GPU_WORK_TIME_LIMIT_SECONDS="90")
    body = {
        "model": "tiny-fair",
        # ~3,000 steps: far longer than the 90 s limit on any machine this runs on
        "training_file": make_file(handle.org, chat_examples(900)).public_id,
        "context_length": 256,
        "hyperparameters": {"n_epochs": 10},
        "lora": {"r": 4},
        "seed": 1,
    }
    response = api_client(handle.key()).post("/v1/fine_tuning/jobs", body, format="json")
    assert response.status_code == 201, response.content
    job = FineTuningJob.objects.unscoped_across_orgs().get(public_id=response.json()["id"])
    wait_for(  # claimed: the training task holds the gpu worker from here on
        lambda: FineTuningJob.objects.unscoped_across_orgs().get(pk=job.pk).status == "running",
        timeout=120,
        what="the training worker to claim the job",
        worker=gpu,
    )

    file = upload(handle, good_upload(), "during-training.jsonl")
    seconds = wait_processed(file, cpu, timeout=SMALL_FILE_SECONDS)
    print(f"upload processed in {seconds:.1f} s while the training job runs")
    job.refresh_from_db()
    assert job.status == "running"  # the training really was holding the gpu worker

    wait_for(
        lambda: FineTuningJob.objects.unscoped_across_orgs().get(pk=job.pk).status != "running",
        timeout=240,
        what="the soft time limit of GPU work",
        worker=gpu,
    )
    job.refresh_from_db()
    assert job.status == "failed" and job.error["code"] == "time_limit_exceeded", job.error
