"""The OpenAPI schema's error half, added once for every operation (settings'
``DEFAULT_SCHEMA_CLASS``), so no view has to spell out the errors the shared plumbing raises.

Every error leaves as the one envelope of ``api.errors`` (``{"error": {type, code, message,
param}}``). Which statuses an operation can answer follows from what the plumbing does to it:

- any request: 400 (malformed request, unknown or invalid query parameters), 406 (an
  ``Accept`` the JSON renderer cannot serve);
- with a request body: 413 (over ``DATA_UPLOAD_MAX_MEMORY_SIZE``) and 415 (a content type no
  parser takes);
- authenticated (not ``auth=[]``): 401 (missing, invalid or revoked key) and 403 (role or
  scope too small);
- with a path parameter: 404 (no such object in the caller's org; another org's is absent);
- 429 everywhere: org throttling, or the per-IP throttle of the public endpoints.

What a service raises beyond those (402 billing, 409 conflicts, 503 no replica) is declared
where it is raised: a view lists it with ``error_responses(409, ...)`` inside its own
``extend_schema(responses=...)``; those descriptions win over the defaults here.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from longtune.api.errors import ERROR_TYPE_BY_STATUS

STATUS_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request: `error.code` names the reason and `error.param` the field.",
    401: "Missing, invalid or revoked API key.",
    402: "Billing: the organization is suspended, over budget or needs a paid plan.",
    403: "The key's role or scopes do not allow this.",
    404: "No such object in this organization.",
    406: "The `Accept` header asks for a type other than JSON.",
    409: "Conflicts with the object's current state.",
    413: "The request body is too large.",
    415: "Unsupported `Content-Type`.",
    429: "Rate limit exceeded; `Retry-After` says when to retry.",
    502: "The upstream (model replica or payment provider) answered with an error.",
    503: "The service is temporarily unavailable; retry later.",
}


class ErrorDetailSerializer(serializers.Serializer):
    type = serializers.ChoiceField(
        choices=sorted({*ERROR_TYPE_BY_STATUS.values()}),
        help_text="The broad class of the error; a client branches on it.",
    )
    code = serializers.CharField(help_text="Machine-readable reason, e.g. `invalid_limit`.")
    message = serializers.CharField(help_text="Human-readable explanation.")
    param = serializers.CharField(
        allow_null=True, help_text="The field path or location at fault, or null."
    )


class ErrorSerializer(serializers.Serializer):
    """The one error envelope (``api.errors``), shaped like OpenAI's."""

    error = ErrorDetailSerializer()


# Statuses a service raises beyond the plumbing's, by operationId: kept here, next to the
# defaults, rather than in each view's decorator (tests/contract asserts every operationId
# below exists, and the fuzzer fails on any status an operation answers but does not list).
SERVICE_ERRORS: dict[str, tuple[int, ...]] = {
    # billing.ensure_billable (402) and the eval gate / idempotency conflicts (409)
    "endpoints_create": (402, 409),
    "fine_tuning_jobs_create": (402, 409),
    "members_partial_update": (409,),
    "members_destroy": (409,),
    "invitations_create": (409,),
    "create_billing_checkout": (409,),
    "create_billing_portal": (409,),
    "files_content_retrieve": (409,),
    "files_token_stats_retrieve": (409, 413),
    "invitations_accept_create": (401, 404),  # 401: wrong password for an existing account
    "invitations_destroy": (409,),
    "fine_tuning_jobs_cancel_create": (409,),
    "auth_signup_confirm_create": (404,),
    "uploads_cancel_create": (409,),
    "uploads_complete_create": (409,),
    "uploads_parts_create": (409,),
    "uploads_presigned_parts_create": (409,),
}


def error_response(status: int, description: str | None = None) -> OpenApiResponse:
    return OpenApiResponse(
        response=ErrorSerializer, description=description or STATUS_DESCRIPTIONS[status]
    )


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """``extend_schema(responses={201: X, **error_responses(402, 409)})`` for service errors."""
    return {status: error_response(status) for status in statuses}


# What DRF's CharField refuses beyond blankness: NUL characters (ProhibitNullCharacters) and,
# when it trims, a value that is only whitespace. Patterns are unanchored searches in JSON
# Schema, hence the explicit ^...$.
NUL_PATTERN = r"\u0000"
NOT_BLANK_PATTERN = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"


class ApiAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema plus the error responses every operation can produce, and
    request schemas as strict as the serializers that validate them."""

    def map_parsers(self) -> list[str]:
        """The API speaks JSON; a view that sets its own ``parser_classes`` (file uploads:
        multipart) is documented with those. The settings' form parsers stay accepted for old
        clients but are not part of the contract."""
        if "parser_classes" in vars(type(self.view)) or any(
            "parser_classes" in vars(klass)
            for klass in type(self.view).__mro__[1:-1]
            if klass.__module__.startswith("longtune.")
        ):
            return super().map_parsers()
        return ["application/json"]

    def _get_response_bodies(self, direction="response"):
        """A DELETE that answers with a body (the deleted or revoked object, OpenAI's
        ``{"id", "object", "deleted"}``) is a 200; drf-spectacular assumes 204 for every
        DELETE."""
        bodies = super()._get_response_bodies(direction)
        serializer = self.get_response_serializers()
        if self.method == "DELETE" and list(bodies) == ["204"] and serializer is not None:
            if not isinstance(serializer, dict):
                return {"200": self._get_response_for_code(serializer, "200", direction=direction)}
        return bodies

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request":
            refuses_unknown, refuses_empty = probe_input_serializer(type(serializer))
            if refuses_unknown:
                schema["additionalProperties"] = False
            if refuses_empty and not schema.get("required"):
                schema["minProperties"] = 1
        return schema

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if schema is None:
            return schema
        if direction == "request":
            self._tighten_request_field(field, schema)
        return schema

    def _insert_field_validators(self, field, schema):
        super()._insert_field_validators(field, schema)
        schema.update(getattr(field, "_schema_keywords", {}))  # after: it drops exclusive*

    def _tighten_request_field(self, field: serializers.Field, schema: dict[str, Any]) -> None:
        """What the serializer refuses that drf-spectacular does not write down."""
        if isinstance(field, serializers.FileField) and not field.allow_empty_file:
            schema["minLength"] = max(1, schema.get("minLength", 0))  # 400 empty_file
        if (
            schema.get("default") == ""
            and isinstance(field, serializers.CharField)
            and not field.allow_blank
        ):
            schema.pop("default")  # "" is filled in when absent, but refused when sent
        if isinstance(field, serializers.CharField) and "pattern" not in schema:
            with_validators = dict(schema)
            super()._insert_field_validators(field, with_validators)
            plain = with_validators.get("type") == "string" and not (
                {"enum", "pattern", "format"} & set(with_validators)
            )
            if plain and not field.allow_blank and field.trim_whitespace:
                schema["pattern"] = NOT_BLANK_PATTERN
            elif plain:
                # Not a pattern: drf-spectacular wraps a blank-allowing field that has one
                # into oneOf [it, ""], which "" would then match twice.
                schema["not"] = {"pattern": NUL_PATTERN}
        if (
            isinstance(field, serializers.ListSerializer | serializers.ListField)
            and not field.allow_empty
            and schema.get("type") == "array"
        ):
            schema["minItems"] = max(1, schema.get("minItems", 0))

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        self._require_body_that_must_not_be_empty(operation)
        responses = operation.setdefault("responses", {})
        ref = self.resolve_serializer(ErrorSerializer, "response").ref
        for status in self.plumbing_error_statuses(operation):
            responses.setdefault(
                str(status),
                {
                    "description": STATUS_DESCRIPTIONS[status],
                    "content": {"application/json": {"schema": ref}},
                },
            )
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _require_body_that_must_not_be_empty(self, operation: dict[str, Any]) -> None:
        """A body whose serializer refuses ``{}`` is required (drf-spectacular marks a body
        required only when a field is)."""
        body = operation.get("requestBody")
        if not body or body.get("required"):
            return
        serializer = self.get_request_serializer()
        if isinstance(serializer, serializers.BaseSerializer) or (
            isinstance(serializer, type) and issubclass(serializer, serializers.BaseSerializer)
        ):
            serializer_class = serializer if isinstance(serializer, type) else type(serializer)
            if probe_input_serializer(serializer_class)[1]:
                body["required"] = True

    def plumbing_error_statuses(self, operation: dict[str, Any]) -> list[int]:
        statuses = {400, 406, 429}
        authenticated = bool(operation.get("security"))  # absent on the public (auth=[]) ones
        if "requestBody" in operation:
            statuses |= {413, 415}
            if authenticated:
                statuses.add(404)  # a body names other objects (model, training_file, ...)
        if authenticated:
            statuses |= {401, 403}
        parameters = operation.get("parameters", [])
        if any(p.get("in") == "path" or p.get("name") == "after" for p in parameters):
            statuses.add(404)  # no such object (or no such cursor) in this organization
        statuses |= set(SERVICE_ERRORS.get(operation["operationId"], ()))
        return sorted(statuses)


def probe_input_serializer(serializer_class: type) -> tuple[bool, bool]:
    """(refuses unknown fields, refuses an empty object), learned by validating two bodies
    with the serializer itself, so the schema says what the code does. Validation of a body
    whose only key is unknown (or of ``{}``) stops before any field-level or database check.
    """
    if serializer_class in _PROBED:
        return _PROBED[serializer_class]
    refuses_unknown = refuses_empty = False
    try:
        unknown = serializer_class(data={PROBE_FIELD: 1})
        if not unknown.is_valid():
            refuses_unknown = PROBE_FIELD in _error_keys(unknown.errors)
        empty = serializer_class(data={})
        refuses_empty = not empty.is_valid()
    except Exception:  # a serializer that needs view context: leave the schema as it is
        refuses_unknown = refuses_empty = False
    _PROBED[serializer_class] = (refuses_unknown, refuses_empty)
    return _PROBED[serializer_class]


PROBE_FIELD = "__longtune_schema_probe__"
_PROBED: dict[type, tuple[bool, bool]] = {}


def _error_keys(errors: Any) -> set[str]:
    if isinstance(errors, dict):
        return {str(key) for key in errors}
    return set()
