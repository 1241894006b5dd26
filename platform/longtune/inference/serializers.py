"""Request validation (coded 400s with the field at fault) and response payloads.

The chat/completions request serializers accept what the official OpenAI client sends and
reject what this server cannot honour (n > 1, logprobs...) instead of silently ignoring it.
"""

from __future__ import annotations

import math
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from longtune.api.fields import schema_keywords, unix
from longtune.inference.models import Deployment, Endpoint, EndpointEvent, UsageRecord

MAX_STOP_SEQUENCES = 4
MAX_MESSAGES = 2048
MAX_PROMPT_CHARS = 4_000_000  # ~1M tokens; the replica applies the real context limit
CHAT_ROLES = ("system", "developer", "user", "assistant")


# --------------------------------------------------------------------------- endpoints


class EndpointCreateSerializer(serializers.Serializer):
    model = serializers.CharField(max_length=300)
    deployment = serializers.ChoiceField(choices=Deployment.choices, default=Deployment.SHARED)
    display_name = serializers.CharField(max_length=100, required=False, default="")
    min_passkey_accuracy = serializers.FloatField(
        min_value=0.0,
        max_value=1.0,
        required=False,
        allow_null=True,
        default=None,
        help_text="Eval gate: refuse the deploy (409 evaluation_required / "
        "evaluation_below_threshold) unless the newest succeeded passkey evaluation of the model "
        "at its context length scored at least this; kept on the endpoint and checked again when "
        "it is started. The org's gate (PUT /v1/evaluation_gate) applies on top of it.",
    )


def endpoint_payload(endpoint: Endpoint, stats: dict[str, Any] | None = None) -> dict[str, Any]:
    payload = {
        "id": endpoint.public_id,
        "object": "endpoint",
        "model": endpoint.model,
        "display_name": endpoint.display_name,
        "deployment": endpoint.deployment,
        # "shared_server": rides its base's shared process; "own_process": a replica of its own
        "hosting": endpoint.hosting,
        "status": endpoint.status,
        "stop_requested": endpoint.stop_requested,
        "context_length": endpoint.context_length,
        "min_passkey_accuracy": endpoint.min_passkey_accuracy,  # its own eval gate, if any
        "error": endpoint.error,
        "created_at": unix(endpoint.created_at),
        "ready_at": unix(endpoint.ready_at),
        "stopped_at": unix(endpoint.stopped_at),
    }
    if stats is not None:
        payload["stats"] = stats
    return payload


def endpoint_event_payload(event: EndpointEvent) -> dict[str, Any]:
    return {
        "id": event.public_id,
        "object": "endpoint.event",
        "created_at": unix(event.created_at),
        "level": event.level,
        "message": event.message,
        "data": event.data,
    }


def usage_payload(record: UsageRecord) -> dict[str, Any]:
    return {
        "id": record.public_id,
        "object": "usage.record",
        "created_at": unix(record.created_at),
        "model": record.model,
        "endpoint": record.endpoint_ref,
        "kind": record.kind,
        "request_id": record.request_id,
        "stream": record.stream,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "total_tokens": record.total_tokens,
        "ttft_ms": record.ttft_ms,
        "tokens_per_second": record.tokens_per_second,
    }


# --------------------------------------------------------------------------- gateway inputs


_STRING = {"type": "string"}


_STOP = {"type": "string", "minLength": 1, "maxLength": 200}


@extend_schema_field(
    {"oneOf": [_STOP, {"type": "array", "items": _STOP, "maxItems": MAX_STOP_SEQUENCES}]}
)
class StopField(serializers.Field):
    """OpenAI's ``stop``: a string or a list of at most 4 non-empty strings."""

    default_error_messages = {
        "invalid": "stop must be a non-empty string or a list of at most 4 non-empty strings."
    }

    def to_internal_value(self, data: Any) -> list[str]:
        items = [data] if isinstance(data, str) else data
        if (
            not isinstance(items, list)
            or len(items) > MAX_STOP_SEQUENCES
            or any(not isinstance(s, str) or not s or len(s) > 200 for s in items)
        ):
            self.fail("invalid")
        return items

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field(
    {
        "oneOf": [
            _STRING,
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"type": {"type": "string", "enum": ["text"]}, "text": _STRING},
                    "required": ["type", "text"],
                },
            },
        ]
    }
)
class MessageContentField(serializers.Field):
    """A string, or a list of ``{"type": "text", "text": ...}`` parts (joined)."""

    default_error_messages = {
        "invalid": "content must be a string or a list of text parts (type 'text' with a string 'text')."
    }

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, str):
            return data
        if isinstance(data, list) and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in data
        ):
            return "".join(p["text"] for p in data)
        self.fail("invalid")

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field({"type": "string", "pattern": f"^({'|'.join(CHAT_ROLES)})$"})
class ChatRoleField(serializers.Field):
    """A role choice documented as a pattern: drf-spectacular turns every "role" enum into a
    shared component, which would collide with the tenancy role enum."""

    default_error_messages = {"invalid_choice": '"{input}" is not a valid choice.'}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or data not in CHAT_ROLES:
            self.fail("invalid_choice", input=str(data)[:50].replace("{", "").replace("}", ""))
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class MessageSerializer(serializers.Serializer):
    role = ChatRoleField()
    content = MessageContentField()
    name = serializers.CharField(max_length=64, required=False)


GREEDY_TEMPERATURE = 1e-4


def _finite(value: float, field: str) -> float:
    if not math.isfinite(value):
        raise serializers.ValidationError({field: "must be a finite number"}, code="invalid")
    return value


class _SamplingSerializer(serializers.Serializer):
    model = serializers.CharField(max_length=300)
    max_tokens = serializers.IntegerField(
        min_value=1, max_value=1_048_576, required=False, allow_null=True
    )
    temperature = serializers.FloatField(min_value=0.0, max_value=2.0, required=False, default=1.0)
    top_p = schema_keywords(
        serializers.FloatField(min_value=0.0, max_value=1.0, required=False, default=1.0),
        exclusiveMinimum=True,  # validate_top_p: (0, 1]
    )
    stop = StopField(required=False, allow_null=True)
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=2**63)
    n = serializers.IntegerField(required=False, default=1, min_value=1, max_value=1)
    stream = serializers.BooleanField(required=False, default=False)
    stream_options = serializers.DictField(required=False, allow_null=True)
    user = serializers.CharField(required=False, max_length=256)

    def validate_temperature(self, value: float) -> float:
        # Below GREEDY_TEMPERATURE, logits / temperature overflows to inf and sampling gets
        # NaN probabilities (the fuzzer's 1.4e-45 was a 500): such a temperature is greedy.
        value = _finite(value, "temperature")
        return 0.0 if value < GREEDY_TEMPERATURE else value

    def validate_top_p(self, value: float) -> float:
        if not math.isfinite(value) or value <= 0.0:
            raise serializers.ValidationError("top_p must be in (0, 1].", code="invalid")
        return value

    def validate_stream_options(self, value: dict | None) -> dict:
        value = value or {}
        include = value.get("include_usage", False)
        if not isinstance(include, bool):
            raise serializers.ValidationError(
                "stream_options.include_usage must be a boolean.", code="invalid"
            )
        return {"include_usage": include}


class ChatCompletionRequestSerializer(_SamplingSerializer):
    messages = MessageSerializer(many=True, allow_empty=False, max_length=MAX_MESSAGES)
    max_completion_tokens = serializers.IntegerField(
        min_value=1, max_value=1_048_576, required=False, allow_null=True
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("max_tokens") is None and attrs.get("max_completion_tokens") is not None:
            attrs["max_tokens"] = attrs["max_completion_tokens"]
        total = sum(len(m["content"]) for m in attrs["messages"])
        if total > MAX_PROMPT_CHARS:
            # A request-size guard (no tokenizer here), not the fits check: that one runs in
            # the engine against the served model's ContextSpec. Same code, one spelling.
            from gpu_runtime.contract import CONTEXT_LENGTH_EXCEEDED

            raise serializers.ValidationError(
                {"messages": "The conversation is too long."}, code=CONTEXT_LENGTH_EXCEEDED
            )
        return attrs


_PROMPT = {"type": "string", "minLength": 1, "maxLength": MAX_PROMPT_CHARS}


@extend_schema_field(
    {"oneOf": [_PROMPT, {"type": "array", "items": _PROMPT, "minItems": 1, "maxItems": 1}]}
)
class PromptField(serializers.Field):
    """OpenAI's ``prompt``: a string, or a list holding exactly one string."""

    default_error_messages = {
        "invalid": "prompt must be a non-empty string (or a list of exactly one string).",
        "too_long": "The prompt is too long.",
    }

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, list) and len(data) == 1:
            data = data[0]
        if not isinstance(data, str) or not data:
            self.fail("invalid")
        if len(data) > MAX_PROMPT_CHARS:
            self.fail("too_long")
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class CompletionRequestSerializer(_SamplingSerializer):
    prompt = PromptField()
    echo = schema_keywords(
        serializers.BooleanField(required=False, default=False), enum=[False]
    )  # validate_echo: only false

    def validate_echo(self, value: bool) -> bool:
        if value:
            raise serializers.ValidationError("echo is not supported.", code="unsupported")
        return value
