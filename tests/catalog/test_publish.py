"""publish_fine_tuned_model: a finished job's model row and its results File, made by the
catalog (the worker only uploads and reports)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError

from gpu_runtime.contract import ContextSpec
from longtune.catalog.models import FineTunedModel
from longtune.catalog.resolution import resolve_model
from longtune.catalog.services import (
    fine_tuned_model_name,
    new_artifact_location,
    publish_fine_tuned_model,
)
from longtune.datasets.models import File, FilePurpose, FileStatus
from longtune.storage import get_storage
from tests.finetuning.helpers import make_job

pytestmark = pytest.mark.django_db
CSV = b"step,loss\n1,2.5\n2,2.25\n"


def publish(job, location=None):
    return publish_fine_tuned_model(
        job,
        location=location or new_artifact_location(job.org.public_id),
        artifact_bytes=1234,
        metrics_csv=CSV,
    )


def test_publish_creates_the_model_with_its_context_spec(org_a):
    job = make_job(org_a.org, status="running", suffix="bot")
    location = new_artifact_location(org_a.org.public_id)
    assert location.prefix == f"orgs/{org_a.org.public_id}/models/{location.public_id}/"
    model = publish(job, location).model
    assert (
        model.name
        == fine_tuned_model_name(job)
        == f"ft:tiny-test:{org_a.org.slug}:bot:{job.public_id}"
    )
    assert (model.public_id, model.artifact_prefix, model.artifact_bytes) == (
        location.public_id,
        location.prefix,
        1234,
    )
    assert (model.org, model.job, model.base_model, model.method) == (
        org_a.org,
        job,
        job.base_model,
        job.method,
    )
    spec = ContextSpec.from_dict(model.context)
    assert spec == ContextSpec(64, 256, "yarn", 4.0)  # base original 64, trained at 256
    assert model.context_length == spec.target_length
    assert resolve_model(org_a.org, model.name).fine_tuned == model


def test_publish_stores_the_results_file_through_datasets(org_a):
    job = make_job(org_a.org, status="running")
    results = publish(job).results_file
    assert (results.org, results.purpose, results.status, results.format) == (
        org_a.org,
        FilePurpose.FINE_TUNE_RESULTS,
        FileStatus.PROCESSED,
        "csv",
    )
    assert (results.filename, results.bytes) == ("step_metrics.csv", len(CSV))
    assert get_storage().open(results.scrubbed_key).read() == CSV
    response = org_a.client().get(f"/v1/files/{results.public_id}/content")
    assert (response.status_code, b"".join(response.streaming_content)) == (200, CSV)


def test_publish_is_atomic(org_a):
    """A model row that cannot be created (a second publish of the same job) leaves no File."""
    job = make_job(org_a.org, status="running")
    publish(job)
    files_before = File.objects.for_org(org_a.org).count()
    with pytest.raises(IntegrityError):
        publish(job)
    assert File.objects.for_org(org_a.org).count() == files_before
    assert FineTunedModel.objects.for_org(org_a.org).count() == 1
