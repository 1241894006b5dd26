"""Shapes of /v1/files (OpenAI's File object plus LongTune's report) and /v1/pii_policy."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from longtune.api.fields import (
    ObjectTypeField,
    UnixTimestampField,
    public_id_field,
    schema_keywords,
)
from longtune.datasets.models import (
    DATASET_PURPOSES,
    File,
    OrgPiiPolicy,
    Upload,
    UploadPart,
    UploadStatus,
)
from longtune.datasets.pii import ALL_ENTITIES
from longtune.datasets.policies import (
    MAX_ALLOW_PATTERN_LENGTH,
    MAX_ALLOW_PATTERNS,
    MAX_ALLOW_VALUE_LENGTH,
    MAX_ALLOW_VALUES,
    PolicyError,
    validate_policy_fields,
)
from longtune.tenancy.serializers import StrictInputSerializer


class FileSerializer(serializers.ModelSerializer):
    """OpenAI's File object; ``format``, ``num_examples``, ``num_tokens``, ``report`` and
    ``error`` are LongTune's additions (the official client keeps unknown fields)."""

    id = public_id_field()
    object = ObjectTypeField("file")
    created_at = UnixTimestampField()
    status_details = serializers.SerializerMethodField()
    format = serializers.SerializerMethodField()

    class Meta:
        model = File
        fields = [
            "id",
            "object",
            "bytes",
            "created_at",
            "filename",
            "purpose",
            "status",
            "status_details",
            "format",
            "num_examples",
            "num_tokens",
            "report",
            "error",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_status_details(self, file: File) -> str | None:
        """Why the file was rejected, in one sentence (OpenAI's field); null otherwise."""
        if not file.error:
            return None
        line = file.error.get("line")
        where = f" (line {line})" if line else ""
        return f"{file.error.get('code')}{where}: {file.error.get('message')}"

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_format(self, file: File) -> str | None:
        return file.format or None


class FileDeletedSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField(default="file")
    deleted = serializers.BooleanField()


class FileUploadSerializer(serializers.Serializer):
    """The multipart form of POST /v1/files (documentation only; the view parses it)."""

    file = serializers.FileField()
    purpose = serializers.ChoiceField(choices=["fine-tune", "evaluation"])


# --- PII policy ------------------------------------------------------------------------------


class PiiPolicySerializer(StrictInputSerializer):
    """GET/PUT /v1/pii_policy. PUT replaces the policy; an omitted field takes its default."""

    object = ObjectTypeField("pii_policy")
    entities = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(ALL_ENTITIES)),
        max_length=len(ALL_ENTITIES),
        required=False,
        help_text="Entity types the scrubber replaces.",
    )
    allow_values = serializers.ListField(
        child=serializers.CharField(max_length=MAX_ALLOW_VALUE_LENGTH, trim_whitespace=False),
        max_length=MAX_ALLOW_VALUES,
        required=False,
        help_text="Literal values kept as-is, e.g. your support address.",
    )
    allow_patterns = serializers.ListField(
        child=serializers.CharField(max_length=MAX_ALLOW_PATTERN_LENGTH, trim_whitespace=False),
        max_length=MAX_ALLOW_PATTERNS,
        required=False,
        help_text="Python regexes; a detected value that fully matches one is kept.",
    )
    available_entities = serializers.SerializerMethodField()
    updated_at = serializers.SerializerMethodField()

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_available_entities(self, policy: Any) -> list[str]:
        return sorted(ALL_ENTITIES)

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_updated_at(self, policy: Any) -> int | None:
        updated = getattr(policy, "updated_at", None)
        return int(updated.timestamp()) if updated else None

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs.setdefault("entities", sorted(ALL_ENTITIES))
        attrs.setdefault("allow_values", [])
        attrs.setdefault("allow_patterns", [])
        attrs["entities"] = sorted(set(attrs["entities"]))
        try:
            validate_policy_fields(
                attrs["entities"], attrs["allow_values"], attrs["allow_patterns"]
            )
        except PolicyError as exc:
            raise serializers.ValidationError(
                {exc.field: [serializers.ErrorDetail(exc.message, code=exc.code)]}
            ) from exc
        return attrs


def default_policy_row() -> OrgPiiPolicy:
    """An unsaved row with the defaults, for orgs that never edited their policy."""
    return OrgPiiPolicy()


# --- resumable uploads (OpenAI's Uploads API) ---------------------------------------------------

MIME_TYPE_PATTERN = (
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
)


class UploadPartSerializer(serializers.ModelSerializer):
    """OpenAI's Upload Part object."""

    id = public_id_field()
    object = ObjectTypeField("upload.part")
    created_at = UnixTimestampField()
    upload_id = serializers.CharField(source="upload.public_id", read_only=True)

    class Meta:
        model = UploadPart
        fields = ["id", "object", "created_at", "upload_id", "bytes"]
        read_only_fields = fields


class UploadSerializer(serializers.ModelSerializer):
    """OpenAI's Upload object. ``parts`` (received so far: what a resuming client still has to
    send) and ``bytes_received`` are LongTune's additions."""

    id = public_id_field()
    object = ObjectTypeField("upload")
    created_at = UnixTimestampField()
    expires_at = UnixTimestampField()
    status = serializers.SerializerMethodField()
    file = FileSerializer(read_only=True, allow_null=True)
    parts = serializers.SerializerMethodField()
    bytes_received = serializers.SerializerMethodField()

    class Meta:
        model = Upload
        fields = [
            "id",
            "object",
            "bytes",
            "created_at",
            "filename",
            "purpose",
            "status",
            "expires_at",
            "file",
            "bytes_received",
            "parts",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=UploadStatus.values))
    def get_status(self, upload: Upload) -> str:
        from longtune.datasets.uploads import effective_status

        return effective_status(upload)

    @extend_schema_field(UploadPartSerializer(many=True))
    def get_parts(self, upload: Upload) -> list[dict[str, Any]]:
        if upload.status != UploadStatus.PENDING:
            return []  # assembled or discarded: the parts no longer exist
        return UploadPartSerializer(upload.parts.all(), many=True).data

    @extend_schema_field(serializers.IntegerField())
    def get_bytes_received(self, upload: Upload) -> int:
        if upload.status == UploadStatus.COMPLETED:
            return upload.bytes
        total = sum(part.bytes for part in upload.parts.all())
        return total if upload.status == UploadStatus.PENDING else 0


class UploadCreateSerializer(StrictInputSerializer):
    """POST /v1/uploads."""

    filename = serializers.CharField(max_length=255)
    purpose = serializers.ChoiceField(choices=list(DATASET_PURPOSES))
    bytes = serializers.IntegerField(min_value=1, help_text="Total size of the file.")
    mime_type = serializers.RegexField(
        MIME_TYPE_PATTERN, max_length=255, help_text="e.g. application/jsonl"
    )


class PartUploadFormSerializer(serializers.Serializer):
    """The multipart form of POST /v1/uploads/{id}/parts (documentation only)."""

    data = serializers.FileField(help_text="The bytes of this part (at most 64 MiB).")


class CompletedPartSerializer(StrictInputSerializer):
    part_number = serializers.IntegerField(min_value=1, max_value=10_000)
    etag = serializers.CharField(max_length=128, help_text="The ETag header S3 answered the PUT.")


class UploadCompleteSerializer(StrictInputSerializer):
    """POST /v1/uploads/{id}/complete: ``part_ids`` (OpenAI) or ``parts`` (presigned S3)."""

    part_ids = serializers.ListField(
        child=serializers.CharField(max_length=64), max_length=10_000, required=False
    )
    md5 = serializers.RegexField(r"^[0-9a-fA-F]{32}$", required=False, allow_blank=True)
    parts = CompletedPartSerializer(many=True, required=False, max_length=10_000)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        has_ids, has_parts = "part_ids" in attrs, "parts" in attrs
        if has_ids == has_parts:
            code = "required" if not has_ids else "conflicting_fields"
            raise serializers.ValidationError(
                {
                    "part_ids": [
                        serializers.ErrorDetail(
                            "Send exactly one of `part_ids` (parts sent through the API) "
                            "and `parts` (presigned S3 parts).",
                            code=code,
                        )
                    ]
                }
            )
        if has_ids and not attrs["part_ids"]:
            raise serializers.ValidationError(
                {"part_ids": [serializers.ErrorDetail("List at least one part.", code="empty")]}
            )
        if has_parts and not attrs["parts"]:
            raise serializers.ValidationError(
                {"parts": [serializers.ErrorDetail("List at least one part.", code="empty")]}
            )
        if has_parts and attrs.get("md5"):
            raise serializers.ValidationError(
                {
                    "md5": [
                        serializers.ErrorDetail(
                            "md5 is checked for `part_ids` uploads; S3 verified each part's "
                            "ETag already.",
                            code="unsupported",
                        )
                    ]
                }
            )
        return attrs


class PresignPartsSerializer(StrictInputSerializer):
    """POST /v1/uploads/{id}/presigned_parts."""

    part_numbers = schema_keywords(
        serializers.ListField(
            child=serializers.IntegerField(min_value=1, max_value=10_000),
            min_length=1,
            max_length=1_000,
        ),
        uniqueItems=True,  # 400 duplicate_part
    )

    def validate_part_numbers(self, value: list[int]) -> list[int]:
        seen: set[int] = set()
        for index, number in enumerate(value):
            if number in seen:
                raise serializers.ValidationError(
                    {
                        index: [
                            serializers.ErrorDetail(f"{number} is listed twice.", "duplicate_part")
                        ]
                    }
                )
            seen.add(number)
        return value


class PresignedPartSerializer(serializers.Serializer):
    part_number = serializers.IntegerField()
    url = serializers.URLField()
    method = serializers.CharField(default="PUT")
    expires_at = serializers.IntegerField()


class NoBodySerializer(StrictInputSerializer):
    """An action that takes no parameters: an empty body or ``{}``; anything else is a 400."""
