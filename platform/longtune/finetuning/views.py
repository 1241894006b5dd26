"""/v1/fine_tuning/jobs, shaped like OpenAI's so its client works unchanged (/v1/models: the
catalog's ``CatalogModelViewSet``)."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from longtune.api.errors import reject_request_body
from longtune.api.pagination import OpenAICursorPagination
from longtune.api.viewsets import OrgScopedViewSet
from longtune.finetuning.models import FineTuningJob, JobEvent
from longtune.finetuning.serializers import (
    JobCreateSerializer,
    checkpoint_payload,
    event_payload,
    job_payload,
)
from longtune.finetuning.services import IDEMPOTENCY_KEY_HEADER, cancel_job, create_job

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_KEY_HEADER,
    # check_idempotency_key: 1..255 printable ASCII (no edge spaces: HTTP strips them).
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]([ -~]*[!-~])?$"},
    OpenApiParameter.HEADER,
    description="Same key + same body returns the same job; same key + another body is 409.",
)


class FineTuningJobViewSet(OrgScopedViewSet):
    model = FineTuningJob

    def safely_get_queryset(self, queryset: QuerySet) -> QuerySet:
        return queryset.select_related("org", "metrics_file", "base_model", "parent_model")

    @extend_schema(operation_id="fine_tuning_jobs_list", responses={200: OpenApiTypes.OBJECT})
    def list(self, request: Request) -> Response:
        paginator = self.paginator
        page = paginator.paginate_queryset(self.get_queryset(), request, view=self)
        return paginator.get_paginated_response([job_payload(job) for job in page])

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def retrieve(self, request: Request, id: str) -> Response:
        return Response(job_payload(self.get_object()))

    @extend_schema(
        request=JobCreateSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={200: OpenApiTypes.OBJECT, 201: OpenApiTypes.OBJECT},
    )
    def create(self, request: Request) -> Response:
        outcome = create_job(
            org=request.org,
            body=request.data,
            api_key=getattr(request, "api_key", None),
            idempotency_key=request.headers.get(IDEMPOTENCY_KEY_HEADER),
        )
        code = status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK
        return Response(job_payload(outcome.job), status=code)

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, id: str) -> Response:
        reject_request_body(request, "cancel")
        job = cancel_job(self.get_object())
        fresh = (
            FineTuningJob.objects.for_org(request.org)
            .select_related("org", "base_model", "parent_model")
            .get(pk=job.pk)
        )
        return Response(job_payload(fresh))

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def events(self, request: Request, id: str) -> Response:
        job = self.get_object()
        events = JobEvent.objects.for_org(request.org).filter(job=job)
        paginator = OpenAICursorPagination()
        page = paginator.paginate_queryset(events, request, view=self)
        return paginator.get_paginated_response([event_payload(event) for event in page])

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def checkpoints(self, request: Request, id: str) -> Response:
        job = self.get_object()
        paginator = OpenAICursorPagination()
        checkpoints = job.checkpoints.select_related("fine_tuned_model")
        page = paginator.paginate_queryset(checkpoints, request, view=self)
        return paginator.get_paginated_response([checkpoint_payload(c, job) for c in page])
