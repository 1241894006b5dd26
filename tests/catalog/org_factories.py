"""Factories for the generated tenant-isolation and fuzz tests (tests/platform/)."""

from __future__ import annotations

from longtune.catalog.models import FineTunedModel
from tests.finetuning.helpers import make_base_model, make_job
from tests.org_factories import org_object_factory


@org_object_factory(FineTunedModel)
def make_fine_tuned_model(org):
    job = make_job(org, status="succeeded", trained_tokens=100)
    name = f"ft:{job.model_name}:{org.slug}::{job.public_id}"
    job.fine_tuned_model = name
    job.save(update_fields=["fine_tuned_model"])
    return FineTunedModel.objects.create(
        org=org,
        name=name,
        job=job,
        base_model=make_base_model(),
        context_length=256,
        artifact_prefix=f"orgs/{org.public_id}/models/x/",
    )
