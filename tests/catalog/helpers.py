"""Builders for the catalog tests: fine-tuned model rows of a given method in a given org."""

from __future__ import annotations

from longtune.catalog.models import BaseModel, FineTunedModel
from tests.finetuning.helpers import make_base_model, make_job


def make_fine_tuned(org, *, method: str = "lora", base: BaseModel | None = None) -> FineTunedModel:
    """A finished job's model row (no artifact in storage: resolution reads rows only)."""
    base = base or make_base_model()
    job = make_job(org, status="succeeded", method=method, trained_tokens=10)
    name = f"ft:{base.name}:{org.slug}:{method}:{job.public_id}"
    job.fine_tuned_model = name
    job.save(update_fields=["fine_tuned_model"])
    return FineTunedModel.objects.create(
        org=org,
        name=name,
        job=job,
        base_model=base,
        method=method,
        context_length=256,
        artifact_prefix=f"orgs/{org.public_id}/models/{method}/",
    )


def error_of(response) -> tuple[int, str, str | None]:
    error = response.json()["error"]
    return response.status_code, error["code"], error.get("param")
