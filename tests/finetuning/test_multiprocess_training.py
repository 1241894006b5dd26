"""A job the memory planner lays out over 2 sequence-parallel ranks trains under torchrun.

Every part is real: the planner decides (its real inputs: the shared pool's CPU "devices" per
job and the RAM one rank may fill, chosen here so one rank does not fit and two do), job
creation stores the plan, a real Celery worker process launches
`torchrun --nproc_per_node 2 -m gpu_runtime train` (gloo), and rank 0's records feed the job's
callbacks: progress, metrics events, checkpoint uploads to moto's S3, the cancel flag.

- end to end: the job succeeds, its events show the layout it ran with ("sequence parallel
  2"), and its model is servable (the artifact from S3 generates through InferenceEngine);
- cancel: a cancel during a 2-process run stops both ranks at a step boundary with a
  checkpoint, the job ends ``cancelled``, and no training process is left;
- the soft time limit during a 2-process run fails the job and ends every process of it;
- a worker allowed fewer ranks than the plan fails the job with a code, starting nothing;
- a shared pool of one CPU rank refuses the same job at creation (what the worker could never
  run is never queued).
"""

from __future__ import annotations

import json

import psutil
import pytest

from gpu_runtime import memory_planner as mp
from longtune.catalog.models import FineTunedModel
from longtune.finetuning.models import FineTuningJob, JobCheckpoint
from longtune.finetuning.planning import INSUFFICIENT_ACCELERATOR_MEMORY
from longtune.tenancy.models import OrgQuota
from tests.conftest import api_client
from tests.finetuning.conftest import FAST_WORKER_ENV, TINY_ORIGINAL_CONTEXT, wait_for
from tests.finetuning.helpers import chat_examples, give_dedicated_queue, make_base_model, make_file

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
JOBS = "/v1/fine_tuning/jobs"
CONTEXT = 1024
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


def tiny_shape(tiny_base_dir) -> mp.ModelShape:
    return mp.ModelShape.from_hf_config(json.loads((tiny_base_dir / "config.json").read_text()))


def memory_needing_two_ranks(shape: mp.ModelShape) -> int:
    """The smallest per-rank RAM (MiB) at which the planner fits this job on 2 CPU ranks,
    checked to be too little for 1: the planner's own arithmetic, not a number we assume."""
    setup = mp.TrainingSetup(
        context_length=CONTEXT, method="lora", lora_r=LORA["r"], lora_dropout=0.0,
        compute_dtype="float32",
    )  # fmt: skip
    for mib in range(64, 4096):
        accelerator = mp.cpu_accelerator(mib * mp.MIB)
        if mp.plan(shape, setup, accelerator, 2).fits:
            assert not mp.plan(shape, setup, accelerator, 1).fits
            return mib
    raise AssertionError("no per-rank memory makes the planner choose 2 ranks")


@pytest.fixture
def two_rank_pool(settings, tiny_base_dir):
    """The shared pool: CPU, 2 ranks per job, each with just too little RAM to go alone."""
    settings.FINETUNE_SHARED_ACCELERATOR = "cpu"
    settings.FINETUNE_SHARED_ACCELERATORS_PER_JOB = 2
    settings.FINETUNE_CPU_MEMORY_MB = memory_needing_two_ranks(tiny_shape(tiny_base_dir))
    return settings


def org_with_queue(make_org, name: str):
    handle = make_org(name, plan="pro")
    OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)
    return handle, give_dedicated_queue(handle.org)


def base(tiny_base_dir):
    return make_base_model(
        "tiny-sp",
        tiny_base_dir,
        original=TINY_ORIGINAL_CONTEXT,
        maximum=CONTEXT,
        architecture=tiny_shape(tiny_base_dir).to_dict(),
    )


def create_job(handle, examples: int, **hyperparameters):
    file = make_file(handle.org, chat_examples(examples))
    body = {
        "model": "tiny-sp",
        "training_file": file.public_id,
        "context_length": CONTEXT,
        "hyperparameters": {"n_epochs": 1} | hyperparameters,
        "lora": LORA,
        "seed": 2,
    }
    return api_client(handle.key()).post(JOBS, body, format="json")


def job_row(job_id: str) -> FineTuningJob:
    return FineTuningJob.objects.unscoped_across_orgs().get(public_id=job_id)


def events(job_id: str) -> list:
    return list(job_row(job_id).events.order_by("pk"))


def messages(job_id: str) -> list[str]:
    return [e.message for e in events(job_id)]


def torchrun_pid(job_id: str) -> int:
    launched = next(e for e in events(job_id) if e.message.startswith("Launched 2 training"))
    return int(launched.data["torchrun_pid"])


def training_processes(job_id: str) -> list[psutil.Process]:
    """Live processes training this job: torchrun and its ranks carry its work dir."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(process.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "gpu_runtime" in cmdline and f"/{job_id}/" in cmdline:
            found.append(process)
    return found


def test_a_job_planned_at_sequence_parallel_2_trains_on_2_processes_and_serves(
    make_org, start_worker, shared_storage, tiny_base_dir, two_rank_pool, tmp_path
):
    from gpu_runtime.registry import load_tokenizer
    from gpu_runtime.serving.engine import EngineConfig, InferenceEngine
    from gpu_runtime.serving.types import GenerationRequest, SamplingParams

    handle, queue = org_with_queue(make_org, "SP Tune")
    base(tiny_base_dir)
    worker = start_worker(queues=queue, FINETUNE_LOCAL_WORLD_SIZE="2", **FAST_WORKER_ENV)
    response = create_job(handle, 12, batch_size=1, sequence_length=256)
    assert response.status_code == 201, response.content
    created = response.json()
    layout = created["memory_plan"]["layout"]
    assert (layout["data_parallel"], layout["sequence_parallel"]) == (1, 2)
    job_id = created["id"]

    wait_for(
        lambda: job_row(job_id).status in ("succeeded", "failed", "cancelled"),
        timeout=300,
        what="the 2-process job",
        worker=worker,
    )
    job = job_row(job_id)
    log = messages(job_id)
    assert job.status == "succeeded", (job.error, log, worker.read_log()[-4000:])
    assert any(m.startswith("Launched 2 training processes (torchrun") for m in log), log
    ready = next(e for e in events(job_id) if e.message.startswith("Model loaded"))
    assert "sequence parallel 2 (ulysses)" in ready.message
    assert ready.data["world_size"] == 2 and ready.data["sequence_parallel"] == 2
    # rank 0's progress went through the same callbacks: one metrics event per step
    total = job.progress["total_steps"]
    metric_steps = sorted(e.data["step"] for e in events(job_id) if e.type == "metrics")
    assert metric_steps == list(range(1, total + 1)) and total >= 2
    assert job.trained_tokens > 0
    assert JobCheckpoint.objects.unscoped_across_orgs().filter(job=job).exists()
    assert training_processes(job_id) == []

    # servable: the published adapter, from S3, generates on the base
    model = FineTunedModel.objects.for_org(handle.org).get(job=job)
    local = tmp_path / "artifact"
    shared_storage.download_dir(model.artifact_prefix, local)
    summary = json.loads((local / "training_summary.json").read_text())
    assert (summary["world_size"], summary["sequence_parallel"]) == (2, 2)
    engine = InferenceEngine(
        EngineConfig(base_model=str(tiny_base_dir), device="cpu"),
        tokenizer=load_tokenizer(str(tiny_base_dir)),
    )
    try:
        engine.register_adapter("ft", str(local))
        assert engine.context("ft").target_length == CONTEXT
        request = GenerationRequest(
            prompt_token_ids=[5] * 16,
            sampling=SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True),
            adapter="ft",
        )
        assert len(engine.generate(request, timeout=120).token_ids) == 4
    finally:
        engine.shutdown()


def test_cancel_during_a_2_process_run_stops_every_rank_and_leaves_no_process(
    make_org, start_worker, shared_storage, tiny_base_dir, two_rank_pool
):
    handle, queue = org_with_queue(make_org, "SP Cancel")
    base(tiny_base_dir)
    worker = start_worker(queues=queue, FINETUNE_LOCAL_WORLD_SIZE="2", **FAST_WORKER_ENV)
    response = create_job(handle, 150, batch_size=1, sequence_length=256)
    assert response.status_code == 201, response.content
    job_id = response.json()["id"]
    wait_for(
        lambda: job_row(job_id).progress.get("step", 0) >= 1,
        timeout=240,
        what="2-process training to start",
        worker=worker,
    )
    launcher = psutil.Process(torchrun_pid(job_id))
    tree = [launcher, *launcher.children(recursive=True)]
    assert len(tree) == 3, tree  # torchrun + 2 ranks
    cancel = api_client(handle.key()).post(f"{JOBS}/{job_id}/cancel")
    assert cancel.status_code == 200 and cancel.json()["cancel_requested"] is True

    wait_for(
        lambda: job_row(job_id).status != "running", timeout=120, what="the stop", worker=worker
    )
    job = job_row(job_id)
    assert job.status == "cancelled", (job.error, messages(job_id))
    stopped_at = job.progress["step"]
    assert stopped_at < job.progress["total_steps"]
    assert f"Job cancelled at step {stopped_at}; checkpoint saved." in messages(job_id)
    checkpoint = JobCheckpoint.objects.unscoped_across_orgs().get(job=job, step=stopped_at)
    assert any(
        i.key.endswith("trainable.safetensors")
        for i in shared_storage.list(checkpoint.storage_prefix)
    )
    assert [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert training_processes(job_id) == []


def test_a_worker_allowed_fewer_ranks_than_planned_fails_the_job_with_a_code(
    make_org, start_worker, shared_storage, tiny_base_dir, two_rank_pool
):
    handle, queue = org_with_queue(make_org, "SP Small Worker")
    base(tiny_base_dir)
    worker = start_worker(queues=queue, FINETUNE_LOCAL_WORLD_SIZE="1", **FAST_WORKER_ENV)
    response = create_job(handle, 12, batch_size=1, sequence_length=256)
    assert response.status_code == 201, response.content
    job_id = response.json()["id"]
    wait_for(
        lambda: job_row(job_id).status in ("succeeded", "failed"),
        timeout=120,
        what="the refused run",
        worker=worker,
    )
    job = job_row(job_id)
    assert job.status == "failed"
    assert job.error["code"] == "insufficient_worker_capacity", job.error
    assert "planned for 2 ranks" in job.error["message"]
    assert not any(m.startswith("Launched") for m in messages(job_id))


def test_a_pool_of_one_cpu_rank_refuses_the_job_at_creation(make_org, tiny_base_dir, two_rank_pool):
    two_rank_pool.FINETUNE_SHARED_ACCELERATORS_PER_JOB = 1
    handle, _ = org_with_queue(make_org, "SP One Rank")
    base(tiny_base_dir)
    response = create_job(handle, 12, batch_size=1, sequence_length=256)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (INSUFFICIENT_ACCELERATOR_MEMORY, "context_length")
    assert "does not fit queue " in error["message"]  # the org's queue, shared-pool hardware
    assert "The longest context that fits there is " in error["message"]
    assert "It would fit 1x a100_80gb" in error["message"]
    assert not FineTuningJob.objects.for_org(handle.org).exists()


def test_the_soft_time_limit_ends_a_2_process_run_and_every_process_of_it(
    make_org, start_worker, shared_storage, tiny_base_dir, two_rank_pool
):
    """The solo pool's SIGALRM lands while the task waits for rank 0's next line: the job
    fails with time_limit_exceeded and torchrun and both ranks are gone with it."""
    handle, queue = org_with_queue(make_org, "SP Time Limit")
    base(tiny_base_dir)
    worker = start_worker(
        queues=queue,
        FINETUNE_LOCAL_WORLD_SIZE="2",
        GPU_WORK_TIME_LIMIT_SECONDS="60",
        **FAST_WORKER_ENV,
    )
    # ~3,000 steps: far past the 60 s limit on any machine this runs on
    response = create_job(handle, 900, n_epochs=10, batch_size=1, sequence_length=256)
    assert response.status_code == 201, response.content
    job_id = response.json()["id"]
    wait_for(
        lambda: job_row(job_id).progress.get("step", 0) >= 1,
        timeout=120,
        what="2-process training to start",
        worker=worker,
    )
    launcher = psutil.Process(torchrun_pid(job_id))
    tree = [launcher, *launcher.children(recursive=True)]
    assert len(tree) == 3, tree
    wait_for(
        lambda: job_row(job_id).status != "running",
        timeout=180,
        what="the soft time limit",
        worker=worker,
    )
    job = job_row(job_id)
    assert job.status == "failed" and job.error["code"] == "time_limit_exceeded", job.error
    assert [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert training_processes(job_id) == []
