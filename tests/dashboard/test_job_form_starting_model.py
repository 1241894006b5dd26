"""The dashboard's job form offers the org's fine-tuned models and checkpoints as a starting
model (never another org's, never a deleted one), and a job started from one continues it."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from longtune.finetuning.models import FineTuningJob
from tests.dashboard.conftest import session_client
from tests.finetuning.helpers import make_base_model, make_file, make_parent_model

pytestmark = pytest.mark.django_db


def job_form(org) -> str:
    return reverse("dashboard:job_new", args=[org.slug])


def test_the_form_offers_the_orgs_fine_tuned_models_and_checkpoints(org_a, org_b):
    final = make_parent_model(org_a.org)
    checkpoint = make_parent_model(org_a.org, checkpoint_step=2)
    deleted = make_parent_model(org_a.org, checkpoint_step=4)
    deleted.deleted_at = timezone.now()
    deleted.save(update_fields=["deleted_at"])
    theirs = make_parent_model(org_b.org)
    page = session_client(org_a.owner).get(job_form(org_a.org))
    assert page.status_code == 200
    offered = {m.name for m in page.context["fine_tuned_models"]}
    assert offered == {final.name, checkpoint.name}
    body = page.content.decode()
    assert f'<option value="{checkpoint.name}"' in body and "checkpoint, lora on tiny-test" in body
    assert 'data-trained="256" data-rope="yarn"' in body  # the context hint's inherited spec
    assert theirs.name not in body and deleted.name not in body
    assert '<optgroup label="Base models">' in body


def test_a_job_started_from_a_checkpoint_in_the_form_continues_it(
    org_a, django_capture_on_commit_callbacks
):
    checkpoint = make_parent_model(org_a.org, checkpoint_step=2)
    make_base_model(original=64, maximum=1024)  # make_job's registration allows 4096
    file = make_file(org_a.org)
    form = {
        "model": checkpoint.name,
        "training_file": file.public_id,
        "method": "lora",
        "n_epochs": "1",
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
    }
    client = session_client(org_a.owner)
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(job_form(org_a.org), form)
    assert response.status_code == 302, response.content.decode()[:2000]
    job = FineTuningJob.objects.for_org(org_a.org).get(parent_model=checkpoint)
    assert job.model_name == checkpoint.name and job.context_length == 256
    detail = client.get(response["Location"]).content.decode()
    assert "<dt>Base model</dt><dd>tiny-test</dd>" in detail
    assert f'<dd id="parent-model">{checkpoint.name} (its adapter, trained on)</dd>' in detail
    # A full fine-tune from a LoRA checkpoint: the API's coded refusal, shown at the method.
    refused = client.post(job_form(org_a.org), {**form, "method": "full"})
    assert refused.status_code == 400
    assert "keeps training its adapter" in " ".join(refused.context["errors"]["method"])
