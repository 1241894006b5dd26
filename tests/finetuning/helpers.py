"""Shared builders for the fine-tuning tests: base models, processed files, chat data."""

from __future__ import annotations

import json
from pathlib import Path

from gpu_runtime.contract import ContextSpec
from longtune.api.ids import new_public_id
from longtune.catalog import services as catalog
from longtune.catalog.models import BaseModel, FineTunedModel
from longtune.compute.models import DedicatedCapacity
from longtune.datasets.models import File, FileStatus
from longtune.datasets.services import scrubbed_key
from longtune.finetuning.models import FineTuningJob
from longtune.storage import get_storage


def chat_examples(count: int, seed: int = 0) -> list[dict]:
    """Short chat examples; about three pack into one 256-token row of the tiny tokenizer."""
    return [
        {
            "messages": [
                {"role": "user", "content": f"hello there number {i + seed} how are you today"},
                {"role": "assistant", "content": f"I am fine thanks, the answer is {i} and more"},
            ]
        }
        for i in range(count)
    ]


def jsonl(examples: list[dict]) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in examples).encode()


def make_base_model(
    name: str = "tiny-test",
    location: str | Path = "/nonexistent/tiny",
    original: int = 64,
    maximum: int = 4096,
    **fields,
) -> BaseModel:
    model, _ = BaseModel.objects.update_or_create(
        name=name,
        defaults={
            "location": str(location),
            "original_context_length": original,
            "max_context_length": maximum,
            **fields,
        },
    )
    return model


def make_file(
    org, examples: list[dict] | None = None, *, status: str = FileStatus.PROCESSED, **fields
) -> File:
    """A File row as the scrubber leaves it, with its scrubbed object really stored."""
    content = jsonl(examples if examples is not None else chat_examples(6))
    public_id = new_public_id("file-")
    key = scrubbed_key(org, public_id) if status == FileStatus.PROCESSED else ""
    if key:
        get_storage().put_bytes(key, content)
    defaults = {
        "public_id": public_id,
        "org": org,
        "filename": "train.jsonl",
        "purpose": "fine-tune",
        "status": status,
        "bytes": len(content),
        "scrubbed_bytes": len(content) if key else None,
        "scrubbed_key": key,
        "format": "chat",
        "num_examples": len(examples) if examples is not None else 6,
        "num_tokens": len(content) // 4,
    }
    return File.objects.create(**{**defaults, **fields})


def make_job(org, **fields) -> FineTuningJob:
    """A job row straight in the DB (no quota check, no dispatch) for read-side tests."""
    base = make_base_model()
    file = make_file(org)
    defaults = {
        "org": org,
        "base_model": base,
        "model_name": base.name,
        "training_file": file,
        "training_file_ref": file.public_id,
        "hyperparameters": {"n_epochs": 1, "batch_size": 1, "learning_rate_multiplier": 1.0},
        "lora": {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["all-linear"]},
        "context": {
            "original_length": base.original_context_length,
            "target_length": 256,
            "rope_method": "yarn",
            "rope_factor": 256 / base.original_context_length,
        },
        "seed": 0,
        "estimated_tokens": 100,
        "status": "running",
    }
    return FineTuningJob.objects.create(**{**defaults, **fields})


def give_dedicated_queue(org) -> str:
    capacity, _ = DedicatedCapacity.objects.for_org(org).get_or_create(org=org, hosts="training")
    return capacity.queue


PARENT_LORA = {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["all-linear"]}


def make_parent_model(
    org,
    *,
    method: str = "lora",
    base: BaseModel | None = None,
    target: int = 256,
    rope_method: str = "yarn",
    checkpoint_step: int | None = None,
) -> FineTunedModel:
    """A succeeded job's model on the tiny base (or, with ``checkpoint_step``, one of its epoch
    checkpoints) as the catalog publishes it: what a new job may start from. ``base``: the
    caller's registration of "tiny-test", restored after make_job re-registers it."""
    job = make_job(
        org,
        status="succeeded",
        method=method,
        lora=PARENT_LORA if method == "lora" else None,
        context=ContextSpec.plan(
            original_length=64, target_length=target, rope_method=rope_method
        ).to_dict(),
    )
    if base is not None:  # make_job re-registers "tiny-test" with its own limits
        base.save()
    spec = ContextSpec.from_dict(job.context)
    location = catalog.new_artifact_location(org.public_id)
    fields = {
        "public_id": location.public_id,
        "org": org,
        "base_model": job.base_model,
        "method": method,
        "context": spec.to_dict(),
        "context_length": spec.target_length,
        "artifact_prefix": location.prefix,
        "artifact_bytes": 10,
    }
    if checkpoint_step is None:
        return FineTunedModel.objects.create(
            name=catalog.fine_tuned_model_name(job), job=job, **fields
        )
    return FineTunedModel.objects.create(
        name=catalog.checkpoint_model_name(job, checkpoint_step),
        checkpoint_of=job,
        checkpoint_step=checkpoint_step,
        **fields,
    )
