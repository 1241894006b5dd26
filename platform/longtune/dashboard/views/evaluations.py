"""Evaluation pages: list + create form, a result page with the heatmap and charts, and a
base-vs-fine-tune comparison. Writes go through ``evaluation.services`` after the API's own
serializer, so a bad value gets the API's message next to its field."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from rest_framework import exceptions

from longtune.catalog.resolution import visible_base_models, visible_fine_tuned_models
from longtune.compute.models import WorkStatus
from longtune.dashboard.errors import NON_FIELD, field_errors, for_inputs
from longtune.dashboard.orgs import org_page
from longtune.dashboard.views.org import page_of
from longtune.dashboard.views.work import _one
from longtune.datasets import services as file_services
from longtune.evaluation.models import (
    TERMINAL_STATUSES,
    EvaluationEvent,
    EvaluationJob,
    RulerTask,
    Suite,
)
from longtune.evaluation.serializers import EvaluationCreateSerializer
from longtune.evaluation.services import cancel_evaluation, create_evaluation

EVENTS_SHOWN = 50
# API error paths -> the form's inputs ("lengths.2" is the third length: the lengths input).
FIELD_ALIASES = {
    "model": "model",
    "suite": "suite",
    "lengths": "lengths",
    "depths": "depths",
    "tasks": "tasks",
    "samples": "samples",
    "seed": "seed",
}


def _number_list(text: str, kind: type) -> list[Any]:
    """ "1024, 2048" -> [1024, 2048]; an item that is not a number is passed on as written, so
    the serializer names it (``lengths.1``: "A valid integer is required.")."""
    out: list[Any] = []
    for item in text.replace(",", " ").split():
        try:
            out.append(kind(item))
        except ValueError:
            out.append(item)
    return out


def evaluation_body(post) -> dict[str, Any]:
    """The form's fields as the JSON body ``POST /v1/evaluations`` takes."""
    body: dict[str, Any] = {
        "model": post.get("model", ""),
        "suite": post.get("suite", ""),
        "lengths": _number_list(post.get("lengths", ""), int),
    }
    if post.get("depths", "").strip():
        body["depths"] = _number_list(post["depths"], float)
    if post.getlist("tasks"):
        body["tasks"] = post.getlist("tasks")
    for name in ("samples", "seed"):  # typed like a JSON body (the API refuses "2" there)
        if post.get(name, "").strip():
            items = _number_list(post[name], int)
            body[name] = items[0] if len(items) == 1 else post[name]
    return body


def _errors_by_input(exc: exceptions.APIException) -> dict[str, list[str]]:
    errors = field_errors(exc)
    grouped: dict[str, list[str]] = {}
    for path, found in errors.items():
        head = path.split(".")[0]
        if head in FIELD_ALIASES and head != path:
            grouped.setdefault(head, []).extend(f"item {path.split('.')[1]}: {m}" for m in found)
        else:
            grouped.setdefault(path, []).extend(found)
    return for_inputs(grouped, FIELD_ALIASES)


@org_page()
def evaluations(request: HttpRequest) -> HttpResponse:
    """List; POST creates one (``evaluation.services.create_evaluation``)."""
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = {
        "model": request.GET.get("model", ""),
        "suite": request.GET.get("suite", Suite.PASSKEY),
        "lengths": "",
        "depths": "",
        "tasks": [],
        "samples": "1",
    }
    if request.method == "POST":
        values = {k: request.POST.get(k, "") for k in ("model", "suite", "lengths", "depths")}
        values |= {"tasks": request.POST.getlist("tasks"), "samples": request.POST.get("samples")}
        serializer = EvaluationCreateSerializer(data=evaluation_body(request.POST))
        try:
            serializer.is_valid(raise_exception=True)
            job = create_evaluation(org=request.org, data=serializer.validated_data)
        except exceptions.APIException as exc:
            errors = _errors_by_input(exc)
        else:
            messages.success(request, f"Evaluation {job.public_id} created.")
            return redirect(
                "dashboard:evaluation", org_slug=request.org.slug, eval_id=job.public_id
            )
    rows = EvaluationJob.objects.for_org(request.org).order_by("-pk")
    return render(
        request,
        "dashboard/evaluations.html",
        {
            "evaluations": page_of(request, rows),
            "errors": errors,
            "non_field_errors": errors.get(NON_FIELD, []),
            "values": values,
            "base_models": visible_base_models(request.org).order_by("name"),
            "fine_tuned_models": visible_fine_tuned_models(request.org).order_by("-pk")[:100],
            "suites": Suite.values,
            "ruler_tasks": RulerTask.values,
        },
        status=400 if errors else 200,
    )


def _evaluation(request: HttpRequest, eval_id: str) -> EvaluationJob:
    return _one(
        EvaluationJob.objects.for_org(request.org).select_related(
            "result_file", "fine_tuned_model", "base_model"
        ),
        eval_id,
        "evaluation",
    )


def headline(job: EvaluationJob) -> dict[str, Any] | None:
    """The one number per length a comparison overlays: accuracy (passkey), mean task score
    (ruler) or perplexity, with its standard error where the suite has one."""
    results = job.results or {}
    if job.status != WorkStatus.SUCCEEDED or not results:
        return None
    if job.suite == Suite.PERPLEXITY:
        return {"label": "perplexity", "values": results["perplexity"], "stderr": None}
    label = "accuracy" if job.suite == Suite.PASSKEY else "mean score over tasks"
    return {"label": label, "values": results["by_length"], "stderr": results["stderr_by_length"]}


def chart_data(job: EvaluationJob) -> dict[str, Any] | None:
    """What the page's chart draws: x = lengths, one series per line."""
    line = headline(job)
    if line is None:
        return None
    series = [{"label": f"{job.model}: {line['label']}", "values": line["values"]}]
    if job.suite == Suite.RULER:
        series += [{"label": task, "values": job.results["accuracy"][task]} for task in job.tasks]
    return {
        "lengths": job.lengths,
        "series": series,
        "y_label": "perplexity" if job.suite == Suite.PERPLEXITY else "score (0-1)",
        "log_y": job.suite == Suite.PERPLEXITY,
    }


def rows_by_length(job: EvaluationJob) -> list[dict[str, Any]]:
    line = headline(job)
    if line is None:
        return []
    return [
        {
            "length": length,
            "value": line["values"][i],
            "stderr": line["stderr"][i] if line["stderr"] else None,
            "tasks": [job.results["accuracy"][t][i] for t in job.tasks]
            if job.suite == Suite.RULER
            else [],
        }
        for i, length in enumerate(job.lengths)
    ]


def comparison_candidates(job: EvaluationJob):
    """Succeeded evaluations of the same suite in the org, the counterpart model first: for a
    fine-tune its base, for a base its fine-tunes."""
    same = (
        EvaluationJob.objects.for_org(job.org)
        .filter(suite=job.suite, status=WorkStatus.SUCCEEDED)
        .exclude(pk=job.pk)
        .select_related("fine_tuned_model")
        .order_by("-pk")
    )
    if job.fine_tuned_model_id:
        counterpart = same.filter(base_model=job.base_model, fine_tuned_model__isnull=True)
    else:
        counterpart = same.filter(base_model=job.base_model, fine_tuned_model__isnull=False)
    return counterpart.first(), same[:50]


@org_page()
def evaluation_detail(request: HttpRequest, eval_id: str) -> HttpResponse:
    job = _evaluation(request, eval_id)
    events = (
        EvaluationEvent.objects.for_org(request.org)
        .filter(evaluation=job)
        .order_by("-pk")[:EVENTS_SHOWN]
    )
    counterpart, candidates = comparison_candidates(job)
    return render(
        request,
        "dashboard/evaluation_detail.html",
        {
            "job": job,
            "events": events,
            "chart": chart_data(job),
            "rows": rows_by_length(job),
            "effective": (job.results or {}).get("effective_context"),
            "counterpart": counterpart,
            "candidates": candidates,
            "running": job.status not in TERMINAL_STATUSES,
        },
    )


@org_page()
def evaluation_compare(request: HttpRequest, eval_id: str) -> HttpResponse:
    """Two evaluations of one suite side by side: both heatmaps, one chart, one table."""
    left = _evaluation(request, eval_id)
    other_id = request.GET.get("with", "")
    right = _evaluation(request, other_id) if other_id else comparison_candidates(left)[0]
    if right is None:
        messages.info(request, "No other succeeded evaluation of this suite to compare with.")
        return redirect("dashboard:evaluation", org_slug=request.org.slug, eval_id=eval_id)
    problem = None
    if right.suite != left.suite:
        problem = f"{right.public_id} is a {right.suite} evaluation, {left.public_id} {left.suite}."
    elif headline(left) is None or headline(right) is None:
        problem = "Both evaluations must have succeeded."
    if problem:
        messages.error(request, problem)
        return redirect("dashboard:evaluation", org_slug=request.org.slug, eval_id=eval_id)
    lengths = sorted(set(left.lengths) | set(right.lengths))

    def aligned(job: EvaluationJob) -> list[float | None]:
        values = dict(zip(job.lengths, headline(job)["values"], strict=True))
        return [values.get(n) for n in lengths]

    chart = {
        "lengths": lengths,
        "series": [
            {"label": f"{left.model} ({left.public_id})", "values": aligned(left)},
            {"label": f"{right.model} ({right.public_id})", "values": aligned(right)},
        ],
        "y_label": headline(left)["label"],
        "log_y": left.suite == Suite.PERPLEXITY,
    }
    table = [
        {"length": n, "left": a, "right": b}
        for n, a, b in zip(lengths, aligned(left), aligned(right), strict=True)
    ]
    return render(
        request,
        "dashboard/evaluation_compare.html",
        {"left": left, "right": right, "chart": chart, "table": table},
    )


@org_page()
def evaluation_heatmap(request: HttpRequest, eval_id: str) -> HttpResponse:
    """The result PNG, streamed from object storage (the org's own file only)."""
    job = _evaluation(request, eval_id)
    if job.result_file is None:  # not (yet) drawn: the evaluation's page says why
        return redirect("dashboard:evaluation", org_slug=request.org.slug, eval_id=eval_id)
    with file_services.open_scrubbed(job.result_file) as stream:  # a PNG of some 50 KB
        png = stream.read()
    return HttpResponse(png, content_type="image/png", headers={"Cache-Control": "private"})


@org_page()
def evaluation_cancel(request: HttpRequest, eval_id: str) -> HttpResponse:
    if request.method == "POST":
        job = cancel_evaluation(_evaluation(request, eval_id))
        messages.success(request, f"Evaluation {job.public_id}: {job.status}.")
    return redirect("dashboard:evaluation", org_slug=request.org.slug, eval_id=eval_id)
