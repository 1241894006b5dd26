"""The schema's error half (api/schema.py), checked on the generated document itself."""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator

from longtune.api.schema import SERVICE_ERRORS

ERROR_REF = "#/components/schemas/Error"


@pytest.fixture(scope="module")
def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def test_every_operation_documents_its_errors_with_the_envelope(schema):
    envelope = schema["components"]["schemas"]["Error"]
    assert envelope["required"] == ["error"]
    detail = schema["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"type", "code", "message", "param"}
    for method, path, operation in operations(schema):
        responses = operation["responses"]
        where = f"{method.upper()} {path}"
        assert {"400", "406", "429"} <= set(responses), where
        authenticated = bool(operation.get("security"))
        if authenticated:
            assert {"401", "403"} <= set(responses), where
        if "{" in path:
            assert "404" in responses, where
        if "requestBody" in operation:
            assert {"413", "415"} <= set(responses), where
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                media = response["content"]["application/json"]["schema"]
                assert media == {"$ref": ERROR_REF}, (where, status)


def test_service_errors_name_real_operations(schema):
    ids = {operation["operationId"] for _, _, operation in operations(schema)}
    assert set(SERVICE_ERRORS) <= ids, set(SERVICE_ERRORS) - ids
    for _, _, operation in operations(schema):
        for status in SERVICE_ERRORS.get(operation["operationId"], ()):
            assert str(status) in operation["responses"]


def test_request_bodies_are_json_except_file_uploads(schema):
    multipart = set()
    for method, path, operation in operations(schema):
        content = operation.get("requestBody", {}).get("content", {})
        if content and list(content) != ["application/json"]:
            multipart.add(f"{method.upper()} {path}")
            assert list(content) == ["multipart/form-data"]
    assert multipart == {"POST /v1/files", "POST /v1/uploads/{id}/parts"}
    file_field = schema["components"]["schemas"]["FileUploadRequest"]["properties"]["file"]
    assert file_field["format"] == "binary" and file_field["minLength"] == 1


def test_request_schemas_are_as_strict_as_their_serializers(schema):
    components = schema["components"]["schemas"]
    chat = components["ChatCompletionRequestRequest"]
    assert chat["properties"]["model"]["minLength"] == 1
    assert chat["properties"]["messages"]["minItems"] == 1
    assert chat["properties"]["top_p"]["exclusiveMinimum"] is True
    # StrictInputSerializer refuses unknown fields: the schema says so.
    assert components["ApiKeyCreateRequest"]["additionalProperties"] is False
    token_stats = schema["paths"]["/v1/files/{id}/token_stats"]["get"]["parameters"]
    context = next(p for p in token_stats if p["name"] == "context_length")
    assert context["schema"]["minimum"] == 1
    usage = schema["paths"]["/v1/usage"]["get"]["parameters"]
    assert next(p for p in usage if p["name"] == "group_by")["schema"]["enum"] == [
        "model",
        "day",
        "model,day",
    ]
    files = schema["paths"]["/v1/files"]["get"]["parameters"]
    purpose = next(p for p in files if p["name"] == "purpose")["schema"]["enum"]
    assert "fine-tune-results" in purpose
