"""Shapes of /v1/files (OpenAI's File object plus LongTune's report) and /v1/pii_policy."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from longtune.api.fields import ObjectTypeField, UnixTimestampField, public_id_field
from longtune.datasets.models import File, OrgPiiPolicy
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
