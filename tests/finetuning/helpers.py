"""Shared builders for the fine-tuning tests: base models, processed files, chat data."""

from __future__ import annotations

import json
from pathlib import Path

from longtune.api.ids import new_public_id
from longtune.catalog.models import BaseModel
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
