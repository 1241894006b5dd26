"""'auto' hyperparameters teach the real model: the bundled examples/support_chat.jsonl,
uploaded (PII-scrubbed by a real worker) and fine-tuned with every hyperparameter left "auto"
as in the README walkthrough, makes SmolLM2-135M-Instruct answer held-out prompts in the
dataset's style (>= 80%; scored by benchmarks/auto_hyperparameters.in_support_style) where
the base model does not. Both are served through the product (shared server, ``openai``
client).

A few minutes on 2 idle CPU cores (40 optimizer steps of one 128-token row); on this
project's loaded 2-core box (load average ~28) the job alone took 952 s, hence the raised
timeout. The converted model is cached under var/test-models/
(tests/inference/test_real_model_e2e.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from django.core.management import call_command

from benchmarks.auto_hyperparameters import (
    PASS_FRACTION,
    held_out_prompts,
    in_support_style,
)
from longtune.tenancy.models import OrgQuota
from tests.conftest import api_client, openai_client
from tests.finetuning.conftest import wait_for
from tests.fixtures.services import REPO_ROOT
from tests.inference.test_real_model_e2e import MODELS_CACHE, REAL, REPLICA_ENV, wait_ready

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(3600),
]
TRAINER_ENV = {
    "FINETUNE_METRICS_EVENT_SECONDS": "0",
    "FINETUNE_HEARTBEAT_SECONDS": "1",
    "FINETUNE_CHECKPOINT_EVERY_STEPS": "20",
    "OMP_NUM_THREADS": "1",  # two threads spin against each other on a busy 2-core box
}


def style_score(client: openai.OpenAI, model: str) -> tuple[int, list[str]]:
    """All held-out prompts at once: the serving engine batches them (one request at a time
    took ~1 min each on the loaded 2-core box)."""

    def answer(messages: list[dict[str, str]]) -> str:
        reply = client.chat.completions.create(
            model=model, messages=messages, max_tokens=24, temperature=0
        )
        return reply.choices[0].message.content

    prompts = held_out_prompts()
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        answers = list(pool.map(answer, prompts))
    return sum(in_support_style(a) for a in answers), answers


def test_auto_hyperparameters_teach_the_real_model_the_support_style(
    live_server, make_org, start_worker, shared_storage
):
    call_command("bootstrap_demo", models_dir=str(MODELS_CACHE))
    handle = make_org("Auto Real", plan="pro")
    OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)  # we poll
    owner = api_client(handle.key())
    client = openai_client(handle.key(), live_server, timeout=600)
    trainer = start_worker(queues="cpu,gpu", **TRAINER_ENV)
    data = (REPO_ROOT / "examples" / "support_chat.jsonl").read_bytes()
    uploaded = client.files.create(file=("support_chat.jsonl", data), purpose="fine-tune")
    wait_for(
        lambda: client.files.retrieve(uploaded.id).status == "processed",
        timeout=300,
        what="the scrubber",
        worker=trainer,
    )
    created = owner.post(
        "/v1/fine_tuning/jobs",
        {"model": REAL, "training_file": uploaded.id, "context_length": 2048, "suffix": "auto",
         "seed": 1},
        format="json",
    )  # fmt: skip
    assert created.status_code == 201, created.content
    # 40 scrubbed examples of ~70 tokens: 128-token rows, one epoch of 40 steps, 2x LoRA LR
    assert created.json()["hyperparameters"] == {
        "n_epochs": 1,
        "batch_size": 1,
        "learning_rate_multiplier": 2.0,
        "sequence_length": 128,
    }
    job_url = f"/v1/fine_tuning/jobs/{created.json()['id']}"
    job = wait_for(
        lambda: (j := owner.get(job_url).json())["status"] in ("succeeded", "failed") and j,
        timeout=2000,
        what="the fine-tune of the real model",
        worker=trainer,
    )
    assert job["status"] == "succeeded", (job["error"], trainer.read_log()[-3000:])
    assert job["progress"]["total_steps"] == 40
    print(f"\nauto fine-tune of {REAL}: {job['finished_at'] - job['created_at']} s wall")

    server = start_worker(queues="inference", **REPLICA_ENV)
    for model in (REAL, job["fine_tuned_model"]):
        endpoint = owner.post("/v1/endpoints", {"model": model}, format="json")
        assert endpoint.status_code == 201, endpoint.content
        wait_ready(owner, f"/v1/endpoints/{endpoint.json()['id']}", server)
    tuned, tuned_answers = style_score(client, job["fine_tuned_model"])
    base, base_answers = style_score(client, REAL)
    total = len(held_out_prompts())
    print(
        f"held-out prompts in the dataset's style: fine-tune {tuned}/{total}, base {base}/{total}"
    )
    assert tuned >= PASS_FRACTION * total, tuned_answers
    assert base < PASS_FRACTION * total and base <= 2, base_answers
