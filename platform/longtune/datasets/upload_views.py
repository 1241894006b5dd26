"""/v1/uploads: OpenAI's Uploads API (+ presigned S3 parts). Thin: parse, call uploads, serialize.

Every route looks the upload up through the org-scoped queryset first, so another org's
upload is a 404 before the body is even parsed.
"""

from __future__ import annotations

from django.core.files.uploadedfile import UploadedFile
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.request import Request
from rest_framework.response import Response

from longtune.api.errors import ApiError
from longtune.api.viewsets import OrgScopedViewSet
from longtune.datasets import uploads
from longtune.datasets.models import Upload
from longtune.datasets.serializers import (
    NoBodySerializer,
    PartUploadFormSerializer,
    PresignedPartSerializer,
    PresignPartsSerializer,
    UploadCompleteSerializer,
    UploadCreateSerializer,
    UploadPartSerializer,
    UploadSerializer,
)
from longtune.storage import CompletedPart

MULTIPART = "multipart/form-data"


def parse_part_form(request: Request) -> UploadedFile:
    """The ``data`` file of a parts POST, or a 400 naming the field at fault."""
    if not request.content_type.startswith(MULTIPART):
        raise ApiError(
            status=400,
            code="multipart_required",
            message=f"Send the part as {MULTIPART} with the file field 'data'.",
            param="data",
        )
    try:
        files, data = request.FILES, request.data
    except (ParseError, UnsupportedMediaType) as exc:
        raise ApiError(
            status=400, code="invalid_multipart", message=f"Malformed multipart body: {exc}",
            param="data",
        ) from None  # fmt: skip
    part = files.get("data")
    if part is None:
        code = "invalid_type" if "data" in data else "required"
        message = (
            "'data' must be a file part, not text." if "data" in data else "'data' is required."
        )
        raise ApiError(status=400, code=code, message=message, param="data")
    if not part.size:
        raise ApiError(status=400, code="empty_part", message="The part is empty.", param="data")
    return part


def _validated(serializer_class, request: Request) -> dict:
    body = serializer_class(data=request.data)
    body.is_valid(raise_exception=True)
    return body.validated_data


class UploadViewSet(mixins.RetrieveModelMixin, OrgScopedViewSet):
    """Create an upload, add parts (or PUT them to presigned S3 URLs), complete or cancel."""

    model = Upload
    serializer_class = UploadSerializer

    def safely_get_queryset(self, queryset: QuerySet) -> QuerySet:
        return queryset.select_related("org", "file").prefetch_related("parts")

    def _respond(self, upload: Upload, code: int = status.HTTP_200_OK) -> Response:
        fresh = self.safely_get_queryset(Upload.objects.for_org(self.request.org)).get(pk=upload.pk)
        return Response(UploadSerializer(fresh).data, status=code)

    @extend_schema(
        request=UploadCreateSerializer,
        responses={200: UploadSerializer},
        description="Start an upload of `bytes` bytes (storage quota reserved now). It expires "
        "after an hour unless completed.",
    )
    def create(self, request: Request) -> Response:
        body = _validated(UploadCreateSerializer, request)
        upload = uploads.create_upload(
            org=request.org,
            filename=body["filename"],
            purpose=body["purpose"],
            size=body["bytes"],
            mime_type=body["mime_type"],
            api_key=request.api_key,
        )
        return self._respond(upload)

    @extend_schema(
        request={MULTIPART: PartUploadFormSerializer},
        responses={200: UploadPartSerializer},
        description="Add one part (at most 64 MiB). Parts may arrive in any order; the order "
        "is given at completion.",
    )
    @action(detail=True, methods=["post"], url_path="parts")
    def parts(self, request: Request, id: str) -> Response:
        upload = self.get_object()
        data = parse_part_form(request)
        part = uploads.add_part(upload, data, data.size)
        return Response(UploadPartSerializer(part).data)

    @extend_schema(
        request=PresignPartsSerializer,
        responses={
            200: inline_serializer(
                "PresignedParts",
                {
                    "object": serializers.CharField(default="list"),
                    "upload_id": serializers.CharField(),
                    "data": PresignedPartSerializer(many=True),
                },
            )
        },
        description="LongTune: presigned S3 PUT URLs for parts of this upload (S3 storage "
        "only; 400 presign_unavailable otherwise). Complete with `parts`.",
    )
    @action(detail=True, methods=["post"], url_path="presigned_parts")
    def presigned_parts(self, request: Request, id: str) -> Response:
        upload = self.get_object()
        body = _validated(PresignPartsSerializer, request)
        urls = uploads.presign_parts(upload, body["part_numbers"])
        data = [
            {
                "part_number": p.part_number,
                "url": p.url,
                "method": "PUT",
                "expires_at": p.expires_at,
            }
            for p in urls
        ]
        return Response({"object": "list", "upload_id": upload.public_id, "data": data})

    @extend_schema(
        request=UploadCompleteSerializer,
        responses={200: UploadSerializer},
        description="Assemble the parts (in the order given) into a File, which is then "
        "scrubbed and validated like any upload.",
    )
    @action(detail=True, methods=["post"], url_path="complete")
    def complete(self, request: Request, id: str) -> Response:
        upload = self.get_object()
        body = _validated(UploadCompleteSerializer, request)
        parts = body.get("parts")
        completed = uploads.complete_upload(
            upload,
            part_ids=body.get("part_ids"),
            parts=[CompletedPart(p["part_number"], p["etag"]) for p in parts] if parts else None,
            md5=body.get("md5") or None,
            api_key=request.api_key,
            request=request,
        )
        return self._respond(completed)

    @extend_schema(request=None, responses={200: UploadSerializer})
    @action(detail=True, methods=["post"], url_path="cancel")
    def cancel(self, request: Request, id: str) -> Response:
        upload = self.get_object()
        _validated(NoBodySerializer, request)  # a garbled body is a 400, not a silent cancel
        return self._respond(uploads.cancel_upload(upload))
