"""Evaluation pages: the form creates through the API's serializer and service (and shows the
API's messages at the field), the result page shows the heatmap, the chart data and the
effective context, and a fine-tune's evaluation is compared with its base's side by side."""

from __future__ import annotations

import io
import json

import pytest
from django.urls import reverse

from longtune.compute.models import WorkStatus
from longtune.evaluation.models import EvaluationJob
from longtune.evaluation.services import save_heatmap
from tests.catalog.helpers import make_fine_tuned
from tests.dashboard.conftest import session_client
from tests.finetuning.helpers import make_base_model

pytestmark = pytest.mark.django_db


def url(name: str, org, *args) -> str:
    return reverse(f"dashboard:{name}", args=[org.slug, *args])


def finished(org, base, *, fine_tuned=None, suite="passkey", by_length=(1.0, 0.5), **extra):
    lengths = [1024, 2048][: len(by_length)]
    results = {
        "lengths": lengths,
        "by_length": list(by_length),
        "stderr_by_length": [0.1] * len(by_length),
        "overall": sum(by_length) / len(by_length),
        "effective_context": {
            "absolute": 1024,
            "absolute_threshold": 0.856,
            "relative": 1024,
            "relative_threshold": 0.9,
        },  # fmt: skip
        **extra,
    }
    return EvaluationJob.objects.create(
        org=org,
        model=fine_tuned.name if fine_tuned else base.name,
        base_model=base,
        fine_tuned_model=fine_tuned,
        suite=suite,
        lengths=lengths,
        depths=[0.5] if suite == "passkey" else [],
        tasks=list(extra.get("accuracy", {})) if suite == "ruler" else [],
        status=WorkStatus.SUCCEEDED,
        results=results,
    )


def test_the_form_creates_an_evaluation_through_the_service(
    org_a, django_capture_on_commit_callbacks
):
    make_base_model("tiny-ev", original=4096)
    client = session_client(org_a.owner)
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(
            url("evaluations", org_a.org),
            {"model": "tiny-ev", "suite": "ruler", "lengths": "2048, 1024",
             "tasks": ["niah_single", "variable_tracking"], "samples": "2"},
        )  # fmt: skip
    job = EvaluationJob.objects.for_org(org_a.org).get()
    assert response.status_code == 302 and response["Location"].endswith(job.public_id)
    assert (job.suite, job.lengths, job.tasks, job.samples) == (
        "ruler",
        [1024, 2048],
        ["niah_single", "variable_tracking"],
        2,
    )
    page = client.get(url("evaluation", org_a.org, job.public_id)).content.decode()
    assert "niah_single, variable_tracking" in page and 'http-equiv="refresh"' in page


@pytest.mark.parametrize(
    ("fields", "input_name", "message"),
    [
        ({"lengths": "1024, lots"}, "lengths", "item 1: A valid integer is required."),
        ({"lengths": "99999"}, "lengths", "exceed tiny-ev's context of 4096 tokens"),
        ({"suite": "perplexity", "depths": "0.5"}, "depths", "passkey suite only"),
        ({"model": "nope"}, "model", "nope"),
    ],
)
def test_the_form_shows_the_apis_message_at_the_field(org_a, fields, input_name, message):
    make_base_model("tiny-ev", original=4096)
    body = {"model": "tiny-ev", "suite": "passkey", "lengths": "1024"} | fields
    response = session_client(org_a.owner).post(url("evaluations", org_a.org), body)
    assert response.status_code == 400
    assert message in " ".join(response.context["errors"][input_name])
    assert f'id="{input_name}-errors"' in response.content.decode()
    assert not EvaluationJob.objects.for_org(org_a.org).exists()


def test_the_result_page_shows_heatmap_chart_and_effective_context(org_a):
    base = make_base_model("tiny-ev", original=4096)
    job = finished(org_a.org, base)
    png = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (4, 4), "green").save(png, format="PNG")
    job.result_file = save_heatmap(job, png.getvalue())
    job.save(update_fields=["result_file"])
    client = session_client(org_a.owner)
    response = client.get(url("evaluation", org_a.org, job.public_id))
    body = response.content.decode()
    chart = json.loads(body.split('id="eval-chart-data" type="application/json">')[1].split("<")[0])
    assert chart["lengths"] == [1024, 2048] and chart["series"][0]["values"] == [1.0, 0.5]
    assert "1024 (absolute bar 0.856)" in body and 'http-equiv="refresh"' not in body
    image = client.get(url("evaluation_heatmap", org_a.org, job.public_id))
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert image.content == png.getvalue()
    assert "No other succeeded passkey evaluation" in body


def test_a_ruler_page_draws_one_line_per_task_plus_the_mean(org_a):
    base = make_base_model("tiny-ev", original=4096)
    accuracy = {"niah_single": [1.0, 1.0], "common_words_extraction": [0.4, 0.0]}
    job = finished(org_a.org, base, suite="ruler", by_length=(0.7, 0.5), accuracy=accuracy)
    body = session_client(org_a.owner).get(url("evaluation", org_a.org, job.public_id))
    chart = body.context["chart"]
    assert [s["label"] for s in chart["series"]][1:] == list(accuracy)
    assert [r["tasks"] for r in body.context["rows"]] == [[1.0, 0.4], [1.0, 0.0]]


def test_a_fine_tune_is_compared_with_its_base_side_by_side(org_a, org_b):
    base = make_base_model("tiny-ev", original=4096)
    tuned = make_fine_tuned(org_a.org, base=base)
    base_eval = finished(org_a.org, base, by_length=(1.0, 0.0))
    tuned_eval = finished(org_a.org, base, fine_tuned=tuned, by_length=(1.0, 0.75))
    client = session_client(org_a.owner)
    page = client.get(url("evaluation", org_a.org, tuned_eval.public_id))
    assert page.context["counterpart"] == base_eval  # the base is offered first
    compare = client.get(url("evaluation_compare", org_a.org, tuned_eval.public_id))
    assert compare.status_code == 200
    series = compare.context["chart"]["series"]
    assert [s["values"] for s in series] == [[1.0, 0.75], [1.0, 0.0]]
    assert [r["right"] for r in compare.context["table"]] == [1.0, 0.0]
    # Another org's evaluation is never a comparison partner: 404, like any of its objects.
    theirs = finished(org_b.org, make_base_model("tiny-b", original=4096))
    other = client.get(
        url("evaluation_compare", org_a.org, tuned_eval.public_id), {"with": theirs.public_id}
    )
    assert other.status_code == 404
    # A different suite is refused with a message, not a broken page.
    ppl = finished(org_a.org, base, suite="perplexity", perplexity=[9.0, 8.0])
    refused = client.get(
        url("evaluation_compare", org_a.org, tuned_eval.public_id), {"with": ppl.public_id}
    )
    assert refused.status_code == 302


def test_a_viewer_sees_no_form_and_cannot_create(org_a):
    make_base_model("tiny-ev", original=4096)
    viewer = session_client(org_a.member("viewer"))
    assert "Start evaluation" not in viewer.get(url("evaluations", org_a.org)).content.decode()
    forged = viewer.post(
        url("evaluations", org_a.org), {"model": "tiny-ev", "suite": "passkey", "lengths": "1024"}
    )
    assert forged.status_code == 403 and not EvaluationJob.objects.for_org(org_a.org).exists()
