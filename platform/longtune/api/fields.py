"""Serializer fields shared by /v1/ resources."""

from __future__ import annotations

import copy
import re
from datetime import datetime
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


@extend_schema_field(OpenApiTypes.INT)
class UnixTimestampField(serializers.Field):
    """Datetimes leave as integer Unix seconds, as in OpenAI's API (read-only)."""

    def __init__(self, **kwargs):
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def to_representation(self, value: datetime) -> int:
        return int(value.timestamp())


def schema_keywords(field: serializers.Field, **keywords: Any) -> serializers.Field:
    """Add JSON-Schema keywords to a field's OpenAPI schema for a rule that its validators
    enforce but drf-spectacular cannot see (``exclusiveMinimum``, ``uniqueItems``, an enum of
    the one supported value). ``api.schema.ApiAutoSchema`` merges them in."""
    # A subclass, not an attribute: DRF deep-copies declared fields by re-instantiating their
    # class from the constructor arguments, which would drop an attribute.
    marked = type(type(field).__name__, (type(field),), {"_schema_keywords": keywords})
    return marked(*copy.deepcopy(field._args), **copy.deepcopy(field._kwargs))


def public_id_field(source: str = "public_id") -> serializers.CharField:
    """The ``id`` a client sees: the model's prefixed public id, never the primary key."""
    return serializers.CharField(source=source, read_only=True)


class ObjectTypeField(serializers.Field):
    """The constant ``"object": "<type>"`` member every resource carries (OpenAI style)."""

    def __init__(self, value: str, **kwargs):
        self.value = value
        super().__init__(read_only=True, source="*", **kwargs)

    def to_representation(self, instance: object) -> str:
        return self.value


class ObjectTypeFieldSchema(OpenApiSerializerFieldExtension):
    target_class = ObjectTypeField

    def map_serializer_field(self, auto_schema, direction):
        # A one-value "enum" would become a shared enum component per field name and collide
        # across resources; OpenAPI 3.0 has no "const", so a pattern pins the value instead.
        value = self.target.value
        return {"type": "string", "pattern": f"^{re.escape(value)}$", "example": value}


def unix(dt: Any) -> int | None:
    """A datetime as OpenAI's integer Unix seconds (None stays None)."""
    return int(dt.timestamp()) if dt is not None else None
