"""A real Celery worker trains jobs that use a validation_file and a data recipe.

- validation: the worker downloads the scrubbed validation file, the runtime evaluates it every
  FINETUNE_EVAL_EVERY_STEPS steps and at the end; valid_loss lands in the metrics events, the
  checkpoint metrics and the result metrics CSV.
- recipe: the training file is mixed with another file by datasets.recipes; the recipe report
  (drawn/kept/dropped per source) is an event, and the model trains on exactly the mixture.
"""

from __future__ import annotations

import csv
import io
import math

import pytest

from longtune.finetuning.models import EventType, JobCheckpoint
from tests.conftest import api_client
from tests.finetuning.conftest import FAST_WORKER_ENV, TINY_ORIGINAL_CONTEXT, wait_for
from tests.finetuning.helpers import (
    chat_examples,
    give_dedicated_queue,
    make_base_model,
    make_file,
)
from tests.finetuning.test_training_worker import JOBS, job_row, messages, roomy_org

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
CONTEXT = 256


def submit(handle, **body) -> str:
    body = {
        "model": "tiny-extra",
        "context_length": CONTEXT,
        "hyperparameters": {"n_epochs": 1, "batch_size": 1},
        "lora": {"r": 4},
        "seed": 2,
        **body,
    }
    response = api_client(handle.key()).post(JOBS, body, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def run_to_end(handle, job_id: str, worker):
    wait_for(
        lambda: job_row(job_id).status in ("succeeded", "failed", "cancelled"),
        timeout=300,
        what="the training job",
        worker=worker,
    )
    job = job_row(job_id)
    assert job.status == "succeeded", (job.error, messages(job_id), worker.read_log()[-4000:])
    return job


def test_validation_file_reports_valid_loss(make_org, start_worker, shared_storage, tiny_base_dir):
    handle = roomy_org(make_org, "Valid Tune")
    queue = give_dedicated_queue(handle.org)
    make_base_model("tiny-extra", tiny_base_dir, original=TINY_ORIGINAL_CONTEXT, maximum=1024)
    worker = start_worker(queues=queue, FINETUNE_EVAL_EVERY_STEPS="2", **FAST_WORKER_ENV)
    train_file = make_file(handle.org, chat_examples(15))
    valid_file = make_file(handle.org, chat_examples(6, seed=100), filename="valid.jsonl")

    job = run_to_end(
        handle, submit(handle, training_file=train_file.public_id,
                       validation_file=valid_file.public_id), worker,
    )  # fmt: skip

    total = job.progress["total_steps"]
    assert total >= 4
    evaluated = [2 * k for k in range(1, total // 2 + 1)] + ([total] if total % 2 else [])
    metrics = {
        e.data["step"]: e.data for e in job.events.filter(type=EventType.METRICS).order_by("pk")
    }
    assert sorted(metrics) == list(range(1, total + 1))
    with_valid = {
        step: data["valid_loss"] for step, data in metrics.items() if "valid_loss" in data
    }
    assert sorted(with_valid) == evaluated
    assert all(math.isfinite(v) and v > 0 for v in with_valid.values())
    assert job.progress["valid_loss"] == with_valid[total]
    last_message = job.events.filter(type=EventType.METRICS).order_by("-pk")[0].message
    assert f"validation loss={with_valid[total]:.4f}" in last_message
    assert (
        JobCheckpoint.objects.unscoped_across_orgs().get(job=job, step=2).metrics["valid_loss"]
        == with_valid[2]
    )
    assert not any("not computed" in m for m in messages(job.public_id))

    rows = list(csv.DictReader(io.StringIO(
        shared_storage.open(job.metrics_file.scrubbed_key).read().decode())))  # fmt: skip
    assert [int(r["step"]) for r in rows] == list(range(1, total + 1))
    csv_valid = {int(r["step"]): float(r["valid_loss"]) for r in rows if r["valid_loss"] != ""}
    assert csv_valid == pytest.approx(with_valid, abs=1e-6)


def source_texts() -> list[dict]:
    """Distinct long texts, with two too short for min_tokens and two exact duplicates."""
    long = [
        {"text": f"source document {i} talks about rivers cities and warm light"} for i in range(10)
    ]
    return [long[0], long[1], {"text": "too short"}, long[2], dict(long[0]), long[3],
            {"text": "tiny"}, long[4], dict(long[3]), *long[5:]]  # fmt: skip


def expected_drops(drawn: list[dict], min_tokens: int) -> dict[str, int]:
    """What the recipe's filters must have dropped from this prefix of a source, recounted."""
    drops: dict[str, int] = {}
    seen: set[str] = set()
    for example in drawn:
        text = example["text"]
        if len(text.split()) < min_tokens:
            drops["too_short"] = drops.get("too_short", 0) + 1
        elif text in seen:
            drops["duplicate"] = drops.get("duplicate", 0) + 1
        seen.add(text)
    return drops


def test_recipe_job_trains_on_the_mixture(make_org, start_worker, shared_storage, tiny_base_dir):
    from transformers import AutoTokenizer

    from gpu_runtime.formats import tokenize_example

    handle = roomy_org(make_org, "Recipe Tune")
    queue = give_dedicated_queue(handle.org)
    make_base_model("tiny-extra", tiny_base_dir, original=TINY_ORIGINAL_CONTEXT, maximum=1024)
    worker = start_worker(queues=queue, **FAST_WORKER_ENV)
    training = chat_examples(9)
    source = source_texts()
    train_file = make_file(handle.org, training)
    source_file = make_file(handle.org, source, format="text")
    min_tokens = 5
    recipe = {"sources": [{"file": source_file.public_id, "weight": 1.0}],
              "training_file_weight": 1.0, "min_tokens": min_tokens}  # fmt: skip

    job = run_to_end(handle, submit(handle, training_file=train_file.public_id, recipe=recipe),
                     worker)  # fmt: skip

    (recipe_event,) = job.events.filter(message__startswith="Recipe mixed ")
    report = recipe_event.data
    counts = report["sources"]
    assert set(counts) == {train_file.public_id, f"{source_file.public_id}#0"}
    from_train, from_source = counts[train_file.public_id], counts[f"{source_file.public_id}#0"]
    # The mixture stops when a source runs dry; both contributed.
    assert from_train["exhausted"] or from_source["exhausted"]
    assert from_train["kept"] > 0 and from_source["kept"] > 0
    assert report["kept"] == from_train["kept"] + from_source["kept"]
    assert recipe_event.message == f"Recipe mixed {report['kept']} examples."
    # Every chat example is long and distinct: kept as drawn. The source's drops are exactly
    # the short texts and repeats among the ones it drew.
    assert from_train == {"drawn": from_train["kept"], "kept": from_train["kept"],
                          "dropped": {}, "exhausted": from_train["exhausted"]}  # fmt: skip
    drawn_source = source[: from_source["drawn"]]
    assert from_source["dropped"] == expected_drops(drawn_source, min_tokens)
    assert from_source["drawn"] - sum(from_source["dropped"].values()) == from_source["kept"]
    assert from_source["dropped"], "the sample data must exercise the recipe's filters"

    # Applied: the runtime packed exactly the kept examples (first `kept` of each source).
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_dir)
    kept_source = [e for i, e in enumerate(drawn_source)
                   if e["text"] not in {x["text"] for x in drawn_source[:i]}
                   and len(e["text"].split()) >= min_tokens]  # fmt: skip
    mixture = training[: from_train["kept"]] + kept_source
    assert len(mixture) == report["kept"]
    expected_tokens = sum(len(tokenize_example(e, tokenizer)) for e in mixture)
    (packed,) = job.events.filter(message__startswith="Data packed into ")
    assert packed.data["real_tokens"] == expected_tokens
    # Billed: one epoch of the real tokens, none of the rows' padding.
    assert job.trained_tokens == expected_tokens < job.progress["total_steps"] * CONTEXT
    assert job.progress["trained_tokens"] == expected_tokens
