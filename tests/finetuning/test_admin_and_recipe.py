"""Staff admin pages for fine-tuning, and recipe validation on job creation."""

from __future__ import annotations

import pytest

from longtune.tenancy.models import User
from tests.finetuning.helpers import make_base_model, make_file, make_job

pytestmark = pytest.mark.django_db


def test_admin_pages_render(client, org_a):
    staff = User.objects.create_superuser("ft-staff@example.com", "staff-password-123")
    client.force_login(staff)
    job = make_job(org_a.org)
    for url in (
        "/admin/catalog/basemodel/",
        "/admin/catalog/basemodel/add/",
        f"/admin/catalog/basemodel/{job.base_model.pk}/change/",
        "/admin/finetuning/finetuningjob/",
        f"/admin/finetuning/finetuningjob/{job.pk}/change/",
        "/admin/compute/dedicatedcapacity/add/",  # was OrgFinetuningSettings (finetuning)
        "/admin/catalog/finetunedmodel/",
    ):
        assert client.get(url).status_code == 200, url
    assert client.get("/admin/finetuning/finetuningjob/add/").status_code == 403


def test_recipe_sources_are_validated_and_counted(org_a, org_b):
    make_base_model()
    train = make_file(org_a.org, num_tokens=100)
    extra = make_file(org_a.org, num_tokens=300)
    client = org_a.client()
    body = {
        "model": "tiny-test",
        "training_file": train.public_id,
        "hyperparameters": {"n_epochs": 1},
        "recipe": {"sources": [{"file": extra.public_id, "weight": 0.5}], "min_tokens": 3},
    }
    response = client.post("/v1/fine_tuning/jobs", body, format="json")
    assert response.status_code == 201, response.content
    job = response.json()
    assert job["recipe"]["sources"] == [{"file": extra.public_id, "weight": 0.5}]
    assert job["recipe"]["deduplicate"] is True and job["recipe"]["training_file_weight"] == 1.0
    assert job["estimated_tokens"] == 400
    foreign = make_file(org_b.org)
    body["recipe"]["sources"][0]["file"] = foreign.public_id
    error = client.post("/v1/fine_tuning/jobs", body, format="json").json()["error"]
    assert (error["code"], error["param"]) == ("file_not_found", "recipe.sources.0.file")
