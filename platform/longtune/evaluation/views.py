"""/v1/evaluations: long-context evaluation jobs (create, list, retrieve, cancel, events), and
/v1/evaluation_gate: the org's eval gate of deploys."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from longtune.api.errors import reject_request_body
from longtune.api.pagination import OpenAICursorPagination
from longtune.api.viewsets import OrgScopedViewSet
from longtune.evaluation.models import EvaluationEvent, EvaluationGate, EvaluationJob
from longtune.evaluation.serializers import (
    EvaluationCreateSerializer,
    EvaluationGateSerializer,
    EvaluationSerializer,
    evaluation_payload,
    event_payload,
)
from longtune.evaluation.services import cancel_evaluation, create_evaluation
from longtune.tenancy import audit


class EvaluationViewSet(OrgScopedViewSet):
    model = EvaluationJob

    def safely_get_queryset(self, queryset: QuerySet) -> QuerySet:
        return queryset.select_related("result_file")

    # The paginator wraps the item schema in the list envelope (a list schema here would be
    # wrapped twice: "data" items that are lists).
    @extend_schema(
        operation_id="evaluations_list", responses={200: EvaluationSerializer(many=True)}
    )
    def list(self, request: Request) -> Response:
        page = self.paginator.paginate_queryset(self.get_queryset(), request, view=self)
        return self.paginator.get_paginated_response([evaluation_payload(j) for j in page])

    @extend_schema(responses={200: EvaluationSerializer})
    def retrieve(self, request: Request, id: str) -> Response:
        return Response(evaluation_payload(self.get_object()))

    @extend_schema(request=EvaluationCreateSerializer, responses={201: EvaluationSerializer})
    def create(self, request: Request) -> Response:
        serializer = EvaluationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = create_evaluation(
            org=request.org,
            data=serializer.validated_data,
            api_key=getattr(request, "api_key", None),
        )
        return Response(evaluation_payload(job), status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: EvaluationSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, id: str) -> Response:
        reject_request_body(request, "cancel")
        job = cancel_evaluation(self.get_object())
        return Response(evaluation_payload(job))

    @extend_schema(
        responses={
            200: inline_serializer(
                "EvaluationEventList",
                {
                    "object": serializers.CharField(),
                    "data": serializers.ListField(child=serializers.DictField()),
                    "has_more": serializers.BooleanField(),
                },
            )
        }
    )
    @action(detail=True, methods=["get"])
    def events(self, request: Request, id: str) -> Response:
        job = self.get_object()
        events = EvaluationEvent.objects.for_org(request.org).filter(evaluation=job)
        paginator = OpenAICursorPagination()
        page = paginator.paginate_queryset(events, request, view=self)
        return paginator.get_paginated_response([event_payload(e) for e in page])


class EvaluationGateView(APIView):
    """The caller's org eval gate: anyone may read it, admins and owners change it."""

    required_permissions = {"GET": "resources.read", "PUT": "evaluation_gate.manage"}

    @extend_schema(operation_id="retrieve_evaluation_gate", responses=EvaluationGateSerializer)
    def get(self, request: Request) -> Response:
        gate = EvaluationGate.objects.for_org(request.org).first() or EvaluationGate()
        return Response(EvaluationGateSerializer(gate).data)

    @extend_schema(
        operation_id="update_evaluation_gate",
        request=EvaluationGateSerializer,
        responses=EvaluationGateSerializer,
    )
    def put(self, request: Request) -> Response:
        body = EvaluationGateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        threshold = body.validated_data["min_passkey_accuracy"]
        gate, _ = EvaluationGate.objects.for_org(request.org).update_or_create(
            org=request.org, defaults={"min_passkey_accuracy": threshold}
        )
        audit.record(
            org=request.org,
            action="evaluation_gate.changed",
            target=request.org,
            request=request,
            metadata={"min_passkey_accuracy": threshold},
        )
        return Response(EvaluationGateSerializer(gate).data)
