"""/v1/files (OpenAI's Files API) and /v1/pii_policy.

Views stay thin: parse and check the request, call datasets.services, serialize. Every bad
upload request answers 400 with a code and the form field at fault, never a 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import BinaryIO

from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import UploadedFile
from django.core.handlers.asgi import ASGIRequest
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from longtune.api.errors import ApiError
from longtune.api.viewsets import OrgScopedViewSet
from longtune.datasets import services, token_report
from longtune.datasets.models import DATASET_PURPOSES, File, FilePurpose, OrgPiiPolicy
from longtune.datasets.serializers import (
    FileDeletedSerializer,
    FileSerializer,
    FileUploadSerializer,
    PiiPolicySerializer,
    default_policy_row,
)
from longtune.storage import CHUNK
from longtune.tenancy import audit

MULTIPART = "multipart/form-data"


def _bad_request(code: str, message: str, param: str | None) -> ApiError:
    return ApiError(status=400, code=code, message=message, param=param)


def parse_upload_form(request: Request) -> tuple[UploadedFile, str]:
    """(uploaded file, purpose) from a multipart POST, or a 400 naming the field at fault."""
    if not request.content_type.startswith(MULTIPART):
        raise _bad_request(
            "multipart_required",
            f"Send the file as {MULTIPART} with fields 'file' and 'purpose'.",
            "file",
        )
    try:
        data, files = request.data, request.FILES
    except (ParseError, UnsupportedMediaType) as exc:
        raise _bad_request(
            "invalid_multipart", f"Malformed multipart body: {exc}", "file"
        ) from None
    purpose = data.get("purpose")
    if not purpose:
        raise _bad_request("required", "The 'purpose' field is required.", "purpose")
    if purpose not in DATASET_PURPOSES:
        raise _bad_request(
            "invalid_choice",
            f"purpose must be one of {sorted(DATASET_PURPOSES)}, got {str(purpose)[:40]!r}.",
            "purpose",
        )
    uploaded = files.get("file")
    if uploaded is None:
        if "file" in data:
            raise _bad_request(
                "invalid_type", "'file' must be a file part (with a filename), not text.", "file"
            )
        raise _bad_request("required", "The 'file' field is required.", "file")
    if not uploaded.size:
        raise _bad_request("empty_file", "The uploaded file is empty.", "file")
    return uploaded, purpose


def _sync_chunks(stream: BinaryIO) -> Iterator[bytes]:
    with stream:
        while chunk := stream.read(CHUNK):
            yield chunk


async def _async_chunks(stream: BinaryIO) -> AsyncIterator[bytes]:
    """Under ASGI: read object storage in a thread so a download does not pin the loop."""
    read = sync_to_async(stream.read, thread_sensitive=False)
    try:
        while chunk := await read(CHUNK):
            yield chunk
    finally:
        await sync_to_async(stream.close, thread_sensitive=False)()


def streamed_file(request: Request, stream: BinaryIO, filename: str) -> StreamingHttpResponse:
    is_asgi = isinstance(getattr(request, "_request", request), ASGIRequest)
    body = _async_chunks(stream) if is_asgi else _sync_chunks(stream)
    response = StreamingHttpResponse(body, content_type="application/jsonl")
    safe_name = "".join(ch for ch in filename if ch.isalnum() or ch in "._-") or "file.jsonl"
    response["Content-Disposition"] = f'attachment; filename="{safe_name}"'
    return response


class DownloadNegotiation(BaseContentNegotiation):
    """A download answers raw bytes whatever ``Accept`` says (the openai client sends
    ``application/binary``); its errors still leave as the JSON envelope."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class FileViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    """Upload, list, inspect, download (scrubbed) and delete files."""

    model = File
    serializer_class = FileSerializer

    def safely_get_queryset(self, queryset: QuerySet) -> QuerySet:
        purpose = self.request.query_params.get("purpose")
        return queryset.filter(purpose=purpose) if purpose else queryset

    @extend_schema(
        request={MULTIPART: FileUploadSerializer},
        responses={201: FileSerializer},
        description="Upload a JSONL (plain, gzip or zstd) file. It is scrubbed and validated "
        "in the background: poll until `status` is `processed` or `error`.",
    )
    def create(self, request: Request) -> Response:
        uploaded, purpose = parse_upload_form(request)
        file = services.accept_upload(
            org=request.org,
            stream=uploaded,
            size=uploaded.size,
            filename=services.clean_filename(uploaded.name),
            purpose=purpose,
            api_key=request.api_key,
            request=request,
        )
        return Response(FileSerializer(file).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=FileDeletedSerializer)
    def destroy(self, request: Request, id: str) -> Response:
        return Response(services.delete_file(self.get_object(), request=request))

    @extend_schema(
        responses={(200, "application/jsonl"): OpenApiTypes.BINARY},
        description="The SCRUBBED JSONL (409 until the file is processed).",
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="content",
        content_negotiation_class=DownloadNegotiation,
    )
    def content(self, request: Request, id: str) -> StreamingHttpResponse:
        file = self.get_object()
        return streamed_file(request, services.open_scrubbed(file), file.filename)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "model",
                str,
                description="Base or fine-tuned model whose tokenizer counts (default: the "
                "default base model).",
            ),
            OpenApiParameter(
                "context_length",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": token_report.ABSOLUTE_MAX_CONTEXT_LENGTH,
                },
                description="Training context (default: the model's).",
            ),
            OpenApiParameter(
                "n_epochs",
                {"type": "integer", "minimum": 1, "maximum": token_report.MAX_EPOCHS},
                description="Epochs to estimate for (default 1).",
            ),
        ],
        responses={200: OpenApiTypes.OBJECT},
        description="Examples, tokens, power-of-two length histogram and estimated training "
        "tokens of a processed file, counted with the chosen model's tokenizer.",
    )
    @action(detail=True, methods=["get"], url_path="token_stats")
    def token_stats(self, request: Request, id: str) -> Response:
        file = self.get_object()  # another org's file: 404 before anything else
        query = token_report.parse_query(request.query_params)
        return Response(token_report.file_token_stats(request.org, file, query))

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "purpose",
                {"type": "string", "enum": list(FilePurpose.values)},
                description="Only files with this purpose.",
            )
        ]
    )
    def list(self, request: Request, *args, **kwargs) -> Response:
        purpose = request.query_params.get("purpose")
        if purpose is not None and purpose not in FilePurpose.values:
            raise _bad_request(
                "invalid_purpose",
                f"purpose must be one of {sorted(FilePurpose.values)}, got {purpose[:40]!r}.",
                "purpose",
            )
        return super().list(request, *args, **kwargs)


class PiiPolicyView(APIView):
    """The caller's org PII policy: anyone may read it, admins and owners change it."""

    required_permissions = {"GET": "resources.read", "PUT": "pii_policy.manage"}

    @extend_schema(operation_id="retrieve_pii_policy", responses=PiiPolicySerializer)
    def get(self, request: Request) -> Response:
        row = OrgPiiPolicy.objects.for_org(request.org).first() or default_policy_row()
        return Response(PiiPolicySerializer(row).data)

    @extend_schema(
        operation_id="update_pii_policy",
        request=PiiPolicySerializer,
        responses=PiiPolicySerializer,
    )
    def put(self, request: Request) -> Response:
        body = PiiPolicySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        row, _ = OrgPiiPolicy.objects.for_org(request.org).update_or_create(
            org=request.org, defaults=body.validated_data
        )
        audit.record(
            org=request.org,
            action="pii_policy.changed",
            target=request.org,
            request=request,
            metadata={k: body.validated_data[k] for k in ("entities", "allow_patterns")}
            | {"allow_values": len(body.validated_data["allow_values"])},
        )
        return Response(PiiPolicySerializer(row).data)
