"""Issue 15: token_stats on a fine-tune-results file (CSV, not a dataset) was a 500
(``'csv' is not a valid DatasetFormat``); it is a coded 400 now. Such files cannot be uploaded."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from longtune.datasets.services import create_results_file
from tests.catalog.helpers import error_of
from tests.finetuning.helpers import make_base_model

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("query", ["", "?context_length=128", "?model=tiny-test"])
def test_token_stats_of_a_results_file_is_a_coded_400(org_a, query):
    make_base_model()
    results = create_results_file(org_a.org, filename="step_metrics.csv", content=b"step,loss\n")
    response = org_a.client().get(f"/v1/files/{results.public_id}/token_stats{query}")
    assert error_of(response) == (400, "file_not_a_dataset", "id")
    assert "fine-tune-results" in response.json()["error"]["message"]


def test_results_purpose_cannot_be_uploaded(org_a):
    client = org_a.client()
    upload = SimpleUploadedFile("x.jsonl", b'{"text": "hi"}\n')
    response = client.post(
        "/v1/files", {"file": upload, "purpose": "fine-tune-results"}, format="multipart"
    )
    assert error_of(response) == (400, "invalid_choice", "purpose")
    response = client.post(
        "/v1/uploads",
        {
            "filename": "x.jsonl",
            "purpose": "fine-tune-results",
            "bytes": 10,
            "mime_type": "application/jsonl",
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "purpose"
