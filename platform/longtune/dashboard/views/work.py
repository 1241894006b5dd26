"""Resource pages: files, fine-tuning jobs, models, endpoints — each write through the service the
API view calls, each error shown with the API's message."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from rest_framework import exceptions

from longtune.api.errors import ApiError
from longtune.catalog.resolution import visible_base_models, visible_fine_tuned_models
from longtune.dashboard.errors import NON_FIELD, field_errors, for_inputs
from longtune.dashboard.orgs import org_page
from longtune.dashboard.views.org import page_of
from longtune.datasets import services as file_services
from longtune.datasets.models import DATASET_PURPOSES, File, FilePurpose, FileStatus
from longtune.finetuning.models import EventType, FineTuningJob, JobCheckpoint, JobEvent
from longtune.finetuning.services import cancel_job, create_job
from longtune.inference.models import Deployment, Endpoint
from longtune.inference.serializers import EndpointCreateSerializer
from longtune.inference.services import (
    create_endpoint,
    endpoint_stats,
    start_endpoint,
    stop_endpoint,
)

EVENTS_SHOWN = 100
CHART_POINTS = 2000
SSE_POLL_SECONDS = 1.0
SSE_MAX_POLLS = 3600  # an hour per connection; EventSource reconnects by itself


def _one(queryset, public_id: str, what: str):
    obj = queryset.filter(public_id=public_id).first()
    if obj is None:
        raise Http404(f"No such {what}.")  # another org's object is absent, never forbidden
    return obj


# --------------------------------------------------------------------------- files


@org_page()
def files(request: HttpRequest) -> HttpResponse:
    """List; POST (multipart) uploads through ``datasets.services.accept_upload``."""
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        uploaded = request.FILES.get("file")
        purpose = request.POST.get("purpose", FilePurpose.FINE_TUNE)
        try:
            if purpose not in DATASET_PURPOSES:
                raise ApiError(
                    status=400, code="invalid_choice", message="Choose a purpose.", param="purpose"
                )
            if uploaded is None or not uploaded.size:
                raise ApiError(
                    status=400, code="required", message="Choose a non-empty file.", param="file"
                )
            file = file_services.accept_upload(
                org=request.org,
                stream=uploaded,
                size=uploaded.size,
                filename=file_services.clean_filename(uploaded.name),
                purpose=purpose,
                api_key=None,
                request=request,
            )
        except exceptions.APIException as exc:
            errors = field_errors(exc)
        else:
            messages.success(
                request, f"{file.filename} uploaded; it is being scrubbed and checked."
            )
            return redirect("dashboard:file", org_slug=request.org.slug, file_id=file.public_id)
    rows = File.objects.for_org(request.org).order_by("-pk")
    return render(
        request,
        "dashboard/files.html",
        {
            "files": page_of(request, rows),
            "errors": errors,
            "purposes": DATASET_PURPOSES,
            "upload_part_bytes": settings.DASHBOARD_UPLOAD_PART_BYTES,
        },
        status=400 if errors else 200,
    )


@org_page()
def file_detail(request: HttpRequest, file_id: str) -> HttpResponse:
    file = _one(File.objects.for_org(request.org), file_id, "file")
    report = file.report or {}
    pii = report.get("pii") or {}
    pii_rows = [
        {"type": kind, "count": count, "samples": (pii.get("samples") or {}).get(kind, [])}
        for kind, count in sorted((pii.get("counts") or {}).items())
    ]
    return render(
        request,
        "dashboard/file_detail.html",
        {
            "file": file,
            "report": report,
            "pii_rows": pii_rows,
            "errors_listed": report.get("errors") or [],
            "error_counts": report.get("error_counts") or {},
            "token_stats": report.get("token_stats") or {},
            "pending": file.status in (FileStatus.UPLOADED, FileStatus.PROCESSING),
        },
    )


# --------------------------------------------------------------------------- jobs

# API error paths -> the job form's inputs.
JOB_FIELD_ALIASES = {
    "model": "model",
    "training_file": "training_file",
    "validation_file": "validation_file",
    "context_length": "context_length",
    "rope_scaling": "rope_method",
    "rope_scaling.type": "rope_method",
    "rope_scaling.factor": "rope_factor",
    "hyperparameters.n_epochs": "n_epochs",
    "hyperparameters.batch_size": "batch_size",
    "hyperparameters.learning_rate_multiplier": "learning_rate_multiplier",
    "full": "method",
    "suffix": "suffix",
}
HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")


def _number_or_raw(text: str) -> Any:
    """The form sends text; the API takes numbers or "auto". Unparseable text goes to the
    serializer as is, so the page shows the API's own message for it."""
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def job_body(post) -> dict[str, Any]:
    """The form's fields as the ``POST /v1/fine_tuning/jobs`` body."""
    body: dict[str, Any] = {
        "model": post.get("model", ""),
        "training_file": post.get("training_file", ""),
    }
    if post.get("validation_file"):
        body["validation_file"] = post["validation_file"]
    if post.get("context_length", "").strip():
        body["context_length"] = _number_or_raw(post["context_length"])
    rope: dict[str, Any] = {}
    if post.get("rope_method"):
        rope["type"] = post["rope_method"]
    if post.get("rope_factor", "").strip():
        rope["factor"] = _number_or_raw(post["rope_factor"])
    if rope:
        body["rope_scaling"] = rope
    hyper = {}
    for name in HYPERPARAMETERS:
        value = post.get(name, "").strip() or "auto"
        hyper[name] = "auto" if value == "auto" else _number_or_raw(value)
    body["hyperparameters"] = hyper
    if post.get("method") == "full":
        body["full"] = True
    if post.get("suffix"):
        body["suffix"] = post["suffix"]
    return body


@org_page()
def jobs(request: HttpRequest) -> HttpResponse:
    rows = FineTuningJob.objects.for_org(request.org).order_by("-pk")
    return render(request, "dashboard/jobs.html", {"jobs": page_of(request, rows)})


@org_page()
def job_new(request: HttpRequest) -> HttpResponse:
    from gpu_runtime.contract import DEFAULT_ROPE_METHOD, JOB_ROPE_METHODS  # stdlib-only contract

    errors: dict[str, list[str]] = {}
    values: dict[str, str] = {
        "model": request.GET.get("model", ""),
        "training_file": request.GET.get("training_file", ""),
        "rope_method": "",
        "method": "lora",
        **{name: "auto" for name in HYPERPARAMETERS},
    }
    if request.method == "POST":
        values = {k: v for k, v in request.POST.items() if k != "csrfmiddlewaretoken"}
        try:
            outcome = create_job(
                org=request.org, body=job_body(request.POST), api_key=None, idempotency_key=None
            )
        except exceptions.APIException as exc:
            errors = for_inputs(field_errors(exc), JOB_FIELD_ALIASES)
        else:
            messages.success(request, f"Fine-tuning job {outcome.job.public_id} created.")
            return redirect(
                "dashboard:job", org_slug=request.org.slug, job_id=outcome.job.public_id
            )
    processed = File.objects.for_org(request.org).filter(
        status=FileStatus.PROCESSED, purpose=FilePurpose.FINE_TUNE
    )
    return render(
        request,
        "dashboard/job_new.html",
        {
            "errors": errors,
            "non_field_errors": errors.get(NON_FIELD, []),
            "values": values,
            "base_models": visible_base_models(request.org).order_by("name"),
            # a job may continue from the org's fine-tuned models and checkpoints too
            "fine_tuned_models": visible_fine_tuned_models(request.org)
            .select_related("base_model")
            .order_by("-pk"),
            "files": processed.order_by("-pk"),
            "rope_methods": JOB_ROPE_METHODS,
            "default_rope": DEFAULT_ROPE_METHOD,
        },
        status=400 if errors else 200,
    )


def _job(request: HttpRequest, job_id: str) -> FineTuningJob:
    return _one(
        FineTuningJob.objects.for_org(request.org).select_related("base_model", "parent_model"),
        job_id,
        "job",
    )


@org_page()
def job_detail(request: HttpRequest, job_id: str) -> HttpResponse:
    job = _job(request, job_id)
    events = JobEvent.objects.for_org(request.org).filter(job=job).order_by("-pk")[:EVENTS_SHOWN]
    checkpoints = JobCheckpoint.objects.for_org(request.org).filter(job=job).order_by("step")
    template = "dashboard/_job_live.html" if request.headers.get("HX-Request") else None
    return render(
        request,
        template or "dashboard/job_detail.html",
        {"job": job, "events": events, "checkpoints": checkpoints},
    )


@org_page()
def job_metrics(request: HttpRequest, job_id: str) -> JsonResponse:
    """The loss curve's points (the job's metrics events), polled by the chart."""
    job = _job(request, job_id)
    points = (
        JobEvent.objects.for_org(request.org)
        .filter(job=job, type=EventType.METRICS)
        .order_by("pk")
        .values_list("data", flat=True)[:CHART_POINTS]
    )
    steps, loss, valid = [], [], []
    for data in points:
        if not data or data.get("step") is None:
            continue
        steps.append(data["step"])
        loss.append(data.get("loss"))
        valid.append(data.get("valid_loss"))
    return JsonResponse(
        {
            "status": job.status,
            "terminal": job.is_terminal,
            "progress": job.progress,
            "steps": steps,
            "loss": loss,
            "valid_loss": valid,
        }
    )


def _metrics_since(org, job_pk: int, after_pk: int) -> tuple[list[dict[str, Any]], int, str, bool]:
    """New loss points after event ``after_pk``, the last pk seen, and the job's status."""
    job = FineTuningJob.objects.for_org(org).only("status").get(pk=job_pk)
    rows = list(
        JobEvent.objects.for_org(org)
        .filter(job_id=job_pk, type=EventType.METRICS, pk__gt=after_pk)
        .order_by("pk")
        .values_list("pk", "data")[:CHART_POINTS]
    )
    points = [
        {"step": d["step"], "loss": d.get("loss"), "valid_loss": d.get("valid_loss")}
        for _, d in rows
        if d and d.get("step") is not None
    ]
    return points, (rows[-1][0] if rows else after_pk), job.status, job.is_terminal


async def _metrics_stream(org, job_pk: int) -> AsyncIterator[bytes]:
    """Server-Sent Events: one ``metrics`` event per batch of new points, ``end`` when the job
    is terminal. Polls the database once per SSE_POLL_SECONDS on the event loop (the query in a
    thread), so a watcher costs no worker thread while it waits."""
    last = 0
    for _ in range(SSE_MAX_POLLS):
        points, last, status, terminal = await sync_to_async(_metrics_since)(org, job_pk, last)
        if points or terminal:
            payload = json.dumps({"status": status, "terminal": terminal, "points": points})
            yield f"event: metrics\ndata: {payload}\n\n".encode()
        if terminal:
            yield b"event: end\ndata: {}\n\n"
            return
        yield b": keep-alive\n\n"
        await asyncio.sleep(SSE_POLL_SECONDS)


@org_page()
def job_metrics_stream(request: HttpRequest, job_id: str) -> StreamingHttpResponse:
    """The loss curve live over SSE (the page falls back to polling metrics.json)."""
    job = _job(request, job_id)
    response = StreamingHttpResponse(
        _metrics_stream(request.org, job.pk), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


@org_page()
def job_cancel(request: HttpRequest, job_id: str) -> HttpResponse:
    job = _job(request, job_id)
    if request.method == "POST":
        try:
            cancel_job(job)
            messages.success(request, "Cancellation requested.")
        except exceptions.APIException as exc:
            messages.error(request, str(exc.detail))
    return redirect("dashboard:job", org_slug=request.org.slug, job_id=job.public_id)


# --------------------------------------------------------------------------- models


@org_page()
def models(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "dashboard/models.html",
        {
            "base_models": visible_base_models(request.org).order_by("name"),
            "fine_tuned": visible_fine_tuned_models(request.org)
            .select_related("base_model")
            .order_by("-pk"),
        },
    )


# --------------------------------------------------------------------------- endpoints


@org_page()
def endpoints(request: HttpRequest) -> HttpResponse:
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        data = {
            "model": request.POST.get("model", ""),
            "deployment": request.POST.get("deployment", Deployment.SHARED),
        }
        if request.POST.get("display_name"):
            data["display_name"] = request.POST["display_name"]
        body = EndpointCreateSerializer(data=data)
        try:
            body.is_valid(raise_exception=True)
            endpoint = create_endpoint(
                org=request.org,
                model_name=body.validated_data["model"],
                deployment=body.validated_data["deployment"],
                display_name=body.validated_data["display_name"],
                api_key=None,
            )
        except exceptions.APIException as exc:
            errors = field_errors(exc)
        else:
            messages.success(request, f"Endpoint {endpoint.public_id} is starting.")
            return redirect("dashboard:endpoints", org_slug=request.org.slug)
    rows = Endpoint.objects.for_org(request.org).live().order_by("-pk")
    models_offered = [m.name for m in visible_base_models(request.org).order_by("name")]
    models_offered += [m.name for m in visible_fine_tuned_models(request.org).order_by("-pk")]
    return render(
        request,
        "dashboard/endpoints.html",
        {
            "endpoints": page_of(request, rows),
            "errors": errors,
            "model_names": models_offered,
            "deployments": Deployment.choices,
            "selected_model": request.GET.get("model", ""),
        },
        status=400 if errors else 200,
    )


@org_page()
def endpoint_detail(request: HttpRequest, endpoint_id: str) -> HttpResponse:
    endpoint = _one(Endpoint.objects.for_org(request.org).live(), endpoint_id, "endpoint")
    return render(
        request,
        "dashboard/endpoint_detail.html",
        {"endpoint": endpoint, "stats": endpoint_stats(endpoint)},
    )


@org_page(read="resources.read", write="inference.invoke")
def playground(request: HttpRequest, endpoint_id: str) -> HttpResponse:
    """Chat with a ready endpoint. The browser calls ``POST /v1/chat/completions`` itself with
    the session (the API's session door: same org resolution, role check, CSRF, throttling and
    usage ledger as an API key) and renders the SSE stream token by token."""
    endpoint = _one(Endpoint.objects.for_org(request.org).live(), endpoint_id, "endpoint")
    return render(request, "dashboard/playground.html", {"endpoint": endpoint})


@org_page()
def endpoint_action(request: HttpRequest, endpoint_id: str, action: str) -> HttpResponse:
    endpoint = _one(Endpoint.objects.for_org(request.org).live(), endpoint_id, "endpoint")
    if request.method == "POST":
        try:
            if action == "start":
                start_endpoint(endpoint)
            elif action == "stop":
                stop_endpoint(endpoint)
            else:
                raise Http404("No such action.")
        except exceptions.APIException as exc:
            messages.error(request, str(exc.detail))
    return redirect("dashboard:endpoint", org_slug=request.org.slug, endpoint_id=endpoint.public_id)
