"""/v1/endpoints, /v1/usage and the OpenAI-compatible /v1/chat/completions, /v1/completions.

The gateway views are DRF views (API-key auth, HasOrgRole with scope ``inference``, the org
rate throttle, the error envelope) whose ``dispatch`` is async: the DRF checks, body
validation and model -> endpoint resolution run in a thread (``sync_to_async``), the proxying
and SSE streaming run on the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db.models import Count, Sum
from django.db.models.functions import TruncDay
from django.http import HttpRequest, HttpResponseBase, JsonResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from longtune.api.errors import ApiError, reject_request_body
from longtune.api.pagination import OpenAICursorPagination, list_envelope
from longtune.api.viewsets import OrgScopedViewSet
from longtune.inference import gateway
from longtune.inference.models import Endpoint, EndpointEvent, UsageRecord
from longtune.inference.quotas import check_inference_tokens
from longtune.inference.serializers import (
    ChatCompletionRequestSerializer,
    CompletionRequestSerializer,
    EndpointCreateSerializer,
    endpoint_event_payload,
    endpoint_payload,
    usage_payload,
)
from longtune.inference.services import (
    create_endpoint,
    delete_endpoint,
    endpoint_stats,
    route_for,
    start_endpoint,
    stop_endpoint,
)


def _validated(serializer_class: type, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ApiError(status=400, code="invalid_body", message="The body must be a JSON object.")
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class EndpointViewSet(OrgScopedViewSet):
    model = Endpoint

    def safely_get_queryset(self, queryset):
        return queryset.live().select_related("org")

    @extend_schema(operation_id="endpoints_list", responses={200: OpenApiTypes.OBJECT})
    def list(self, request: Request) -> Response:
        page = self.paginator.paginate_queryset(self.get_queryset(), request, view=self)
        return self.paginator.get_paginated_response([endpoint_payload(e) for e in page])

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def retrieve(self, request: Request, id: str) -> Response:
        endpoint = self.get_object()
        return Response(endpoint_payload(endpoint, endpoint_stats(endpoint)))

    @extend_schema(request=EndpointCreateSerializer, responses={201: OpenApiTypes.OBJECT})
    def create(self, request: Request) -> Response:
        data = _validated(EndpointCreateSerializer, request.data)
        endpoint = create_endpoint(
            org=request.org,
            model_name=data["model"],
            deployment=data["deployment"],
            display_name=data["display_name"],
            api_key=getattr(request, "api_key", None),
            min_passkey_accuracy=data["min_passkey_accuracy"],
        )
        return Response(endpoint_payload(endpoint), status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def destroy(self, request: Request, id: str) -> Response:
        endpoint = self.get_object()
        delete_endpoint(endpoint)
        return Response({"id": endpoint.public_id, "object": "endpoint.deleted", "deleted": True})

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def start(self, request: Request, id: str) -> Response:
        reject_request_body(request, "start")
        return Response(endpoint_payload(start_endpoint(self.get_object())))

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, id: str) -> Response:
        reject_request_body(request, "stop")
        return Response(endpoint_payload(stop_endpoint(self.get_object())))

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def events(self, request: Request, id: str) -> Response:
        endpoint = self.get_object()
        events = EndpointEvent.objects.for_org(request.org).filter(endpoint=endpoint)
        paginator = OpenAICursorPagination()
        page = paginator.paginate_queryset(events, request, view=self)
        return paginator.get_paginated_response([endpoint_event_payload(e) for e in page])


GROUP_BY_PARAMETER = OpenApiParameter(
    "group_by",
    {"type": "string", "enum": ["model", "day", "model,day"]},
    OpenApiParameter.QUERY,
    description="'model', 'day' or 'model,day': token sums per bucket instead of records.",
)
GROUP_FIELDS = {"model": "model", "day": "day"}


class UsageViewSet(OrgScopedViewSet):
    """The org's usage ledger: one record per request, or sums per model and/or UTC day."""

    model = UsageRecord

    @extend_schema(
        operation_id="usage_list",
        parameters=[GROUP_BY_PARAMETER],
        responses={200: OpenApiTypes.OBJECT},
    )
    def list(self, request: Request) -> Response:
        records = self.get_queryset()
        if model := request.query_params.get("model"):
            records = records.filter(model=model)
        group_by = request.query_params.get("group_by")
        if group_by:
            return Response(list_envelope(self._buckets(records, group_by)))
        page = self.paginator.paginate_queryset(records, request, view=self)
        return self.paginator.get_paginated_response([usage_payload(r) for r in page])

    def _buckets(self, records, group_by: str) -> list[dict[str, Any]]:
        keys = [k.strip() for k in group_by.split(",") if k.strip()]
        if not keys or any(k not in GROUP_FIELDS for k in keys) or len(set(keys)) != len(keys):
            raise ApiError(
                status=400,
                code="invalid_group_by",
                message="group_by must be 'model', 'day' or 'model,day'.",
                param="group_by",
            )
        rows = (
            records.annotate(day=TruncDay("created_at"))
            .values(*keys)
            .annotate(
                requests=Count("pk"),
                prompt_tokens=Sum("prompt_tokens"),
                completion_tokens=Sum("completion_tokens"),
            )
            .order_by(*keys)
        )
        buckets = []
        for row in rows:
            bucket = {"object": "usage.bucket", **row}
            if "day" in bucket:
                bucket["day"] = bucket["day"].date().isoformat()
            bucket["total_tokens"] = bucket["prompt_tokens"] + bucket["completion_tokens"]
            bucket["id"] = ":".join(str(bucket[k]) for k in keys)
            buckets.append(bucket)
        return buckets


# --------------------------------------------------------------------------- the gateway


class _GatewayView(APIView):
    required_scope = "inference"
    required_permissions = {"POST": "inference.invoke"}
    request_serializer: type
    kind: str

    async def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        self.args, self.kwargs = args, kwargs
        prepared = await sync_to_async(self._prepare)(request)
        if isinstance(prepared, HttpResponseBase):
            return prepared
        try:
            return await self.post(request, prepared)
        except ApiError as exc:
            return JsonResponse(exc.body(), status=exc.status_code, headers=exc.headers)

    def _prepare(self, django_request: HttpRequest) -> gateway.GatewayCall | HttpResponseBase:
        """DRF's sync pipeline (auth, scope/role, throttle, parsing) + validation + routing."""
        request = self.initialize_request(django_request, *self.args, **self.kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            self.initial(request, *self.args, **self.kwargs)
            if request.method != "POST":
                raise exceptions.MethodNotAllowed(request.method)
            return self.build_call(request)
        except Exception as exc:  # noqa: BLE001 - DRF's handler re-raises what it cannot map
            response = self.finalize_response(request, self.handle_exception(exc))
            response.render()
            return response

    def build_call(self, request: Request) -> gateway.GatewayCall:
        """Validated body + route. No fits-in-context check here: the gateway cannot count
        tokens (no tokenizer in the web tier) and its row only mirrors the model's context;
        the engine checks once against the served model's saved ContextSpec and the replica's
        coded 400 (``context_length_exceeded``) is passed through (gateway.Upstream)."""
        data = _validated(self.request_serializer, request.data)
        check_inference_tokens(request.org)
        route = route_for(request.org, data["model"])
        return gateway.GatewayCall(
            kind=self.kind,
            org=request.org,
            api_key=getattr(request, "api_key", None),
            route=route,
            body=gateway.replica_request(
                messages=data.get("messages"), prompt=data.get("prompt"), data=data, route=route
            ),
            stream=data["stream"],
            include_usage=bool((data.get("stream_options") or {}).get("include_usage")),
        )

    # Proxy one authorized call (``dispatch`` prepared it) on the event loop: the one
    # implementation behind /v1/chat/completions and /v1/completions. (A comment, not a
    # docstring: drf-spectacular would publish an inherited docstring as the operation's
    # description.)
    async def post(self, request: HttpRequest, call: gateway.GatewayCall) -> HttpResponseBase:
        upstream = gateway.Upstream(call)
        await upstream.open()
        if not call.stream:
            return JsonResponse(await gateway.complete(call, upstream))
        chunks: AsyncIterator[bytes] | list[bytes] = gateway.sse_stream(call, upstream)
        if not isinstance(request, ASGIRequest):
            # WSGI (dev server, test client) would consume an async iterator on another event
            # loop than the one the replica connection lives on: drain it here instead.
            chunks = [chunk async for chunk in chunks]
        response = StreamingHttpResponse(chunks, content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response


# One Server-Sent Event as a client parses it: `data` is a JSON chunk (or "[DONE]").
SSE_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "data": {"type": "string"},
        "event": {"type": "string"},
        "id": {"type": "string"},
    },
    "required": ["data"],
}


def _documented_post(operation_id: str, request_serializer: type) -> Any:
    """``_GatewayView.post`` under one endpoint's OpenAPI operation. A fresh coroutine
    function per view: extend_schema stores its annotations on the function object, and
    drf-spectacular's own extend_schema_view would wrap it in a sync function (Django would
    then no longer see an async view)."""

    @extend_schema(
        operation_id=operation_id,
        request=request_serializer,
        # JSON, or with "stream": true Server-Sent Events ("data: {chunk}" lines, "[DONE]").
        responses={
            (200, "application/json"): OpenApiTypes.OBJECT,
            (200, "text/event-stream"): SSE_EVENT_SCHEMA,
        },
    )
    async def post(self, request: HttpRequest, call: gateway.GatewayCall) -> HttpResponseBase:
        return await _GatewayView.post(self, request, call)

    return post


class ChatCompletionsView(_GatewayView):
    request_serializer = ChatCompletionRequestSerializer
    kind = gateway.CHAT
    post = _documented_post("chat_completions_create", ChatCompletionRequestSerializer)


class CompletionsView(_GatewayView):
    request_serializer = CompletionRequestSerializer
    kind = gateway.TEXT
    post = _documented_post("completions_create", CompletionRequestSerializer)
