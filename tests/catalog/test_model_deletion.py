"""DELETE /v1/models/{id}: an org deletes its own fine-tuned model, and only that.

OpenAI's semantics: the deletion object comes back, the model is gone from /v1/models and
from inference. Ours on top: its artifact leaves object storage (and the storage quota), the
audit log says who did it, and a model an endpoint is attached to cannot be deleted.
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from longtune.api.errors import ApiError
from longtune.catalog.models import FineTunedModel
from longtune.catalog.resolution import resolve_model
from longtune.storage import get_storage
from longtune.tenancy.models import AuditLogEntry
from longtune.tenancy.quotas import current_usage
from tests.catalog.helpers import error_of, make_fine_tuned
from tests.finetuning.helpers import make_base_model
from tests.inference.helpers import make_endpoint

pytestmark = pytest.mark.django_db(transaction=True)  # the artifact goes on commit


def path_of(name: str) -> str:
    return f"/v1/models/{name}"


def with_artifact(model: FineTunedModel, size: int = 1000) -> FineTunedModel:
    get_storage().put_bytes(model.artifact_prefix + "adapter_model.safetensors", b"x" * size)
    model.artifact_bytes = size
    model.save(update_fields=["artifact_bytes"])
    return model


def test_owner_deletes_a_fine_tune_and_it_is_gone_everywhere(org_a):
    model = with_artifact(make_fine_tuned(org_a.org))
    client = org_a.client()
    storage_before = current_usage(org_a.org)["storage_bytes"]

    response = client.delete(path_of(model.name))

    assert response.status_code == 200, response.content
    assert response.json() == {"id": model.name, "object": "model", "deleted": True}
    listed = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert model.name not in listed
    assert error_of(client.get(path_of(model.name)))[:2] == (404, "not_found")
    with pytest.raises(ApiError) as raised:
        resolve_model(org_a.org, model.name)
    assert raised.value.code == "model_not_found"
    assert list(get_storage().list(model.artifact_prefix)) == []
    assert current_usage(org_a.org)["storage_bytes"] == storage_before - 1000
    entry = AuditLogEntry.objects.for_org(org_a.org).get(action="model.deleted")
    assert (entry.target_id, entry.metadata) == (model.public_id, {"name": model.name})
    row = FineTunedModel.objects.for_org(org_a.org).get(pk=model.pk)  # kept for the job
    assert row.deleted_at is not None and row.job_id == model.job_id
    # A second DELETE: the model no longer exists for the org.
    assert error_of(client.delete(path_of(model.name))) == (404, "not_found", "model")


def test_another_orgs_model_is_a_404_and_stays(org_a, org_b):
    theirs = with_artifact(make_fine_tuned(org_b.org))
    assert error_of(org_a.client().delete(path_of(theirs.name))) == (404, "not_found", "model")
    assert FineTunedModel.objects.for_org(org_b.org).get(pk=theirs.pk).deleted_at is None
    assert len(list(get_storage().list(theirs.artifact_prefix))) == 1


def test_a_base_model_cannot_be_deleted(org_a):
    base = make_base_model("deletable-not")
    assert error_of(org_a.client().delete(path_of(base.name))) == (
        403,
        "model_not_deletable",
        "model",
    )
    assert org_a.client().get(path_of(base.name)).status_code == 200


def test_a_model_with_an_endpoint_attached_is_refused_until_the_endpoint_is_deleted(org_a):
    model = with_artifact(make_fine_tuned(org_a.org))
    endpoint = make_endpoint(
        org_a.org, model=model.base_model, status="stopped", fine_tuned_model=model
    )
    status, code, param = error_of(org_a.client().delete(path_of(model.name)))
    assert (status, code, param) == (409, "model_in_use", "model")
    assert FineTunedModel.objects.for_org(org_a.org).get(pk=model.pk).deleted_at is None
    assert len(list(get_storage().list(model.artifact_prefix))) == 1

    endpoint.deleted_at = timezone.now()
    endpoint.save(update_fields=["deleted_at"])
    assert org_a.client().delete(path_of(model.name)).status_code == 200


def test_viewers_cannot_delete(org_a):
    model = make_fine_tuned(org_a.org)
    response = org_a.client("viewer").delete(path_of(model.name))
    assert error_of(response)[:2] == (403, "insufficient_role")
    assert FineTunedModel.objects.for_org(org_a.org).get(pk=model.pk).deleted_at is None
