"""Each org page: what it shows, what its forms do (through the API's services), role-awareness,
the API's validation messages next to the job form's fields, and no N+1 queries on lists."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from longtune.datasets.models import File
from longtune.finetuning.models import EventType, FineTuningJob, JobEvent
from longtune.inference.models import Endpoint
from longtune.tenancy.models import ApiKey, AuditLogEntry, Membership
from tests.catalog.org_factories import make_fine_tuned_model
from tests.dashboard.conftest import session_client
from tests.finetuning.helpers import make_base_model, make_file, make_job
from tests.inference.helpers import make_endpoint, make_usage
from tests.org_factories import make_membership

pytestmark = pytest.mark.django_db


def url(name: str, org, *args) -> str:
    return reverse(f"dashboard:{name}", args=[org.slug, *args])


# --------------------------------------------------------------------------- overview, keys


def test_overview_shows_quotas_and_usage(org_a):
    body = session_client(org_a.owner).get(url("overview", org_a.org)).content.decode()
    assert "storage_bytes" in body and "max_concurrent_jobs" in body
    assert "Start a fine-tune" in body


def test_api_key_secret_is_shown_once_then_never(org_a):
    client = session_client(org_a.owner)
    created = client.post(
        url("api_keys", org_a.org),
        {"name": "ci", "role": "member", "scopes": ["read", "inference"]},
    )
    assert created.status_code == 200
    assert created["Cache-Control"] == "no-store"
    key = ApiKey.objects.for_org(org_a.org).get(name="ci")
    assert key.role == "member" and key.scopes == ["inference", "read"]
    secret = created.context["created"]["secret"]
    assert secret.startswith("lt_") and secret in created.content.decode()
    reloaded = client.get(url("api_keys", org_a.org)).content.decode()
    assert secret not in reloaded and key.redacted_value in reloaded
    # The secret works against the API: one business rule, two doors.
    from tests.conftest import api_client

    assert api_client(secret).get("/v1/files").status_code == 200


def test_api_key_grant_is_bounded_by_the_creators_role(org_a):
    admin = org_a.member("admin")
    response = session_client(admin).post(
        url("api_keys", org_a.org), {"name": "up", "role": "owner"}
    )
    assert response.status_code == 400
    assert response.context["errors"] == {"role": ["A 'admin' key cannot create a 'owner' key."]}
    assert 'id="role-errors"' in response.content.decode()
    assert not ApiKey.objects.for_org(org_a.org).filter(name="up").exists()


def test_revoke_key(org_a):
    key = ApiKey.objects.for_org(org_a.org).get(name="default")
    response = session_client(org_a.owner).post(url("revoke_key", org_a.org, key.public_id))
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_viewer_sees_no_write_buttons(org_a):
    viewer = session_client(org_a.member("viewer"))
    make_file(org_a.org)
    for name in ("overview", "files", "jobs", "models", "endpoints", "members"):
        body = viewer.get(url(name, org_a.org)).content.decode()
        assert 'type="submit">Upload' not in body and "Create endpoint" not in body, name
        assert "New fine-tuning job" not in body and "Change</button>" not in body, name
    assert viewer.get(url("api_keys", org_a.org)).status_code == 403  # keys: admins and owners
    assert viewer.get(url("audit_log", org_a.org)).status_code == 403


# --------------------------------------------------------------------------- members, audit


def test_member_role_change_and_removal_follow_the_matrix(org_a):
    member = org_a.member("member")
    owner = session_client(org_a.owner)
    response = owner.post(url("member_action", org_a.org, member.public_id), {"role": "admin"})
    assert response.status_code == 302
    assert Membership.objects.for_org(org_a.org).get(user=member).role == "admin"
    # An admin cannot demote an owner: the service refuses, the page says why.
    admin = session_client(member)
    refused = admin.post(
        url("member_action", org_a.org, org_a.owner.public_id), {"role": "viewer"}, follow=True
    )
    assert Membership.objects.for_org(org_a.org).get(user=org_a.owner).role == "owner"
    assert 'class="message error"' in refused.content.decode()
    owner.post(url("member_action", org_a.org, member.public_id), {"remove": "1"})
    assert not Membership.objects.for_org(org_a.org).filter(user=member).exists()


def test_audit_log_lists_the_orgs_entries(org_a):
    session_client(org_a.owner).post(url("api_keys", org_a.org), {"name": "audited"})
    body = session_client(org_a.owner).get(url("audit_log", org_a.org)).content.decode()
    assert "api_key.created" in body and org_a.owner.email in body


# --------------------------------------------------------------------------- files


def test_upload_form_goes_through_the_upload_service(org_a, django_capture_on_commit_callbacks):
    client = session_client(org_a.member("member"))
    data = b'{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}\n'
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            url("files", org_a.org),
            {"file": SimpleUploadedFile("chat.jsonl", data), "purpose": "fine-tune"},
        )
    assert response.status_code == 302
    file = File.objects.for_org(org_a.org).get(filename="chat.jsonl")
    assert response["Location"] == url("file", org_a.org, file.public_id)
    assert file.status == "uploaded" and file.bytes == len(data)
    assert callbacks, "the scrub task is queued on commit, as for the API"
    assert AuditLogEntry.objects.for_org(org_a.org).filter(action="file.uploaded").exists()


def test_upload_without_a_file_shows_the_error_at_the_field(org_a):
    response = session_client(org_a.owner).post(url("files", org_a.org), {"purpose": "fine-tune"})
    assert response.status_code == 400
    assert 'id="file-errors"' in response.content.decode()


def test_file_report_shows_line_numbers_and_pii_counts(org_a):
    file = make_file(
        org_a.org,
        report={
            "valid": True,
            "errors": [{"line": 7, "code": "missing_assistant", "message": "No assistant turn."}],
            "error_counts": {"missing_assistant": 1},
            "pii": {
                "counts": {"EMAIL": 12, "PHONE": 3},
                "samples": {"EMAIL": ["j***@example.com"]},
            },
            "token_stats": {"total_tokens": 1234, "histogram": {"64": 3}},
        },
    )
    body = session_client(org_a.owner).get(url("file", org_a.org, file.public_id)).content.decode()
    assert "<td>7</td>" in body and "missing_assistant" in body
    assert "<td>EMAIL</td><td>12</td>" in body and "j***@example.com" in body
    assert "<td>PHONE</td><td>3</td>" in body and "total_tokens" in body


# --------------------------------------------------------------------------- jobs


def test_job_form_submits_through_create_job(org_a, django_capture_on_commit_callbacks):
    base = make_base_model()
    file = make_file(org_a.org)
    client = session_client(org_a.owner)
    assert client.get(url("job_new", org_a.org)).status_code == 200
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(
            url("job_new", org_a.org),
            {
                "model": base.name,
                "training_file": file.public_id,
                "context_length": "128",
                "rope_method": "linear",
                "method": "lora",
                "n_epochs": "2",
                "batch_size": "auto",
                "learning_rate_multiplier": "auto",
            },
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    job = FineTuningJob.objects.for_org(org_a.org).get()
    assert response["Location"] == url("job", org_a.org, job.public_id)
    assert job.context_length == 128 and job.rope_method == "linear" and job.rope_factor == 2
    assert job.hyperparameters["n_epochs"] == 2 and job.method == "lora"


@pytest.mark.parametrize(
    ("field", "value", "api_body"),
    [
        ("n_epochs", "0", {"hyperparameters": {"n_epochs": 0}}),
        ("n_epochs", "lots", {"hyperparameters": {"n_epochs": "lots"}}),
        ("context_length", "8", {"context_length": 8}),
        ("learning_rate_multiplier", "99", {"hyperparameters": {"learning_rate_multiplier": 99}}),
        ("context_length", "999999", {"context_length": 999999}),
        ("training_file", "file-nope", {"training_file": "file-nope"}),
    ],
)
def test_job_form_shows_the_apis_own_message_next_to_the_field(org_a, field, value, api_body):
    base = make_base_model()
    file = make_file(org_a.org)
    api_request = {"model": base.name, "training_file": file.public_id, **api_body}
    api = org_a.client("owner").post("/v1/fine_tuning/jobs", api_request, format="json")
    assert api.status_code in (400, 404), api.content
    api_message = api.json()["error"]["message"]
    form = {
        "model": base.name,
        "training_file": file.public_id,
        "method": "lora",
        "n_epochs": "auto",
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
        field: value,
    }
    page = session_client(org_a.owner).post(url("job_new", org_a.org), form)
    assert page.status_code == 400
    errors = page.context["errors"]
    assert field in errors, errors
    shown = " ".join(errors[field])
    assert shown in api_message or api_message.endswith(shown), (shown, api_message)
    assert f'id="{field}-errors"' in page.content.decode()
    assert not FineTuningJob.objects.for_org(org_a.org).exists()


async def collect(chunks) -> bytes:
    return b"".join([chunk async for chunk in chunks])


def test_job_page_metrics_and_cancel(org_a):
    job = make_job(org_a.org, status="queued")
    for step, loss in [(1, 2.5), (2, 2.1), (3, 1.7)]:
        JobEvent.objects.create(
            org=org_a.org, job=job, type=EventType.METRICS, message=f"step {step}",
            data={"step": step, "total_steps": 3, "loss": loss, "valid_loss": None},
        )  # fmt: skip
    client = session_client(org_a.owner)
    page = client.get(url("job", org_a.org, job.public_id)).content.decode()
    assert 'id="loss-chart"' in page and "uPlot.iife.min.js" in page and "Cancel job" in page
    live = client.get(url("job", org_a.org, job.public_id), HTTP_HX_REQUEST="true")
    assert live.content.decode().lstrip().startswith('<div id="job-live"')  # the fragment only
    metrics = client.get(url("job_metrics", org_a.org, job.public_id)).json()
    assert metrics["steps"] == [1, 2, 3] and metrics["loss"] == [2.5, 2.1, 1.7]
    assert metrics["terminal"] is False
    client.post(url("job_cancel", org_a.org, job.public_id))
    job.refresh_from_db()
    assert job.status == "cancelled"
    # The SSE stream: every point once, then "end" (the job is terminal now).
    stream = client.get(url("job_metrics_stream", org_a.org, job.public_id))
    assert stream["Content-Type"] == "text/event-stream"
    body = async_to_sync(collect)(stream.streaming_content).decode()
    events = [block for block in body.split("\n\n") if block.startswith("event:")]
    assert [e.splitlines()[0] for e in events] == ["event: metrics", "event: end"]
    payload = json.loads(events[0].splitlines()[1].removeprefix("data: "))
    assert [p["step"] for p in payload["points"]] == [1, 2, 3]
    assert payload["terminal"] is True and payload["status"] == "cancelled"


# --------------------------------------------------------------------------- endpoints, usage


def test_endpoint_create_and_stop(org_a, django_capture_on_commit_callbacks):
    base = make_base_model()
    client = session_client(org_a.owner)
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(
            url("endpoints", org_a.org), {"model": base.name, "deployment": "shared"}
        )
    assert response.status_code == 302, response.content.decode()[:1000]
    endpoint = Endpoint.objects.for_org(org_a.org).get()
    page = client.get(url("endpoint", org_a.org, endpoint.public_id)).content.decode()
    assert endpoint.model in page and "Time to first token" in page
    client.post(url("endpoint_action", org_a.org, endpoint.public_id, "stop"))
    endpoint.refresh_from_db()
    assert endpoint.stop_requested or endpoint.status == "stopped"


def test_endpoint_for_an_unknown_model_shows_the_api_error(org_a):
    response = session_client(org_a.owner).post(url("endpoints", org_a.org), {"model": "nope"})
    assert response.status_code == 400
    assert "nope" in " ".join(sum(response.context["errors"].values(), []))


def test_usage_shows_tokens_by_day_and_model(org_a):
    endpoint = make_endpoint(org_a.org, status="stopped")
    make_usage(endpoint, prompt=10, completion=5)
    make_usage(endpoint, prompt=1, completion=2)
    page = session_client(org_a.owner).get(url("usage", org_a.org))
    rows = page.context["rows"]
    assert [(r["model"], r["requests"], r["total_tokens"]) for r in rows] == [
        (endpoint.model, 2, 18)
    ]
    assert page.context["chart"]["tokens"] == [18]
    assert 'id="usage-data"' in page.content.decode()


# --------------------------------------------------------------------------- no N+1


def _queries(client, path) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(path).status_code == 200
    return len(ctx.captured_queries)


def _key(org):
    from longtune.tenancy.services.api_keys import issue_api_key

    owner = Membership.objects.for_org(org).select_related("user").filter(role="owner").first()
    return issue_api_key(org=org, created_by=owner.user, role="member")


LISTS = {
    "files": make_file,
    "jobs": make_job,
    "api_keys": _key,
    "audit_log": lambda org: AuditLogEntry.objects.create(org=org, action="api_key.created"),
    "members": make_membership,
    "endpoints": lambda org: make_endpoint(org, status="stopped"),
    "models": make_fine_tuned_model,
}


@pytest.mark.parametrize("page", sorted(LISTS))
def test_list_pages_query_count_does_not_grow(org_a, page):
    client = session_client(org_a.owner)
    LISTS[page](org_a.org)
    few = _queries(client, url(page, org_a.org))
    for _ in range(8):
        LISTS[page](org_a.org)
    many = _queries(client, url(page, org_a.org))
    assert many == few, f"{page}: {few} queries for 1 row, {many} for 9 (N+1)"
