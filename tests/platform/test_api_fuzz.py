"""Nothing a client sends may produce a 500.

Generated from the URLconf: every /v1/ route accepting a body (POST/PUT/PATCH) gets malformed
JSON, wrong JSON types, huge numbers, unknown fields, hostile strings and wrong content types —
the field names come from the route's OpenAPI request schema. Every answer must be < 500, and
every error must be the envelope.
"""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator

from tests.conftest import api_client
from tests.org_factories import load_all_factories
from tests.platform.v1_routes import v1_routes

BODY_METHODS = ("post", "put", "patch")
CASES = [
    (route, method) for route in v1_routes() for method in route.methods if method in BODY_METHODS
]
FACTORIES = load_all_factories()

MALFORMED_JSON: list[bytes] = [
    b"",
    b"{",
    b'{"email": ',
    b"{'single': 'quotes'}",
    b"\xff\xfe\x00garbage",
    b"NaN",
    b"[" * 100_000,  # nesting deep enough to blow the parser's recursion limit
    b'{"a": ' + b"9" * 5000 + b"}",  # longer than Python's int-from-string limit
    b'{"a": 1e999999}',
]
WEIRD_VALUES: list[object] = [
    None,
    True,
    -1,
    0,
    10**30,
    -(2**63) - 1,
    1.5e308,
    "",
    "x" * 100_000,
    "\x00nul",
    "😀" * 50,
    "not-an-email@@",
    [],
    [None, {"deep": [1, 2]}],
    {},
    {"$gt": ""},
]


def request_fields() -> dict[tuple[str, str], list[str]]:
    """(path, method) -> request body property names, read from the generated OpenAPI schema."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    components = schema["components"]["schemas"]
    fields: dict[tuple[str, str], list[str]] = {}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            content = (
                operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            )
            ref = content.get("schema", {}).get("$ref", "")
            properties = (
                components.get(ref.rsplit("/", 1)[-1], {}).get("properties", {}) if ref else {}
            )
            fields[(path, method)] = sorted(properties)
    return fields


FIELDS = request_fields()


def fields_for(url: str, method: str) -> list[str]:
    """The request fields of the OpenAPI operation whose path template matches ``url``."""
    for (path, operation_method), names in FIELDS.items():
        pattern = re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path))
        if operation_method == method and re.fullmatch(pattern, url):
            return names
    raise AssertionError(f"{method.upper()} {url} is missing from the OpenAPI schema")


def payloads(field_names: list[str]) -> list[object]:
    bodies: list[object] = [{"unknown_field_zzz": 1}, [], "string", 12, None]
    for value in WEIRD_VALUES:
        bodies.append({name: value for name in field_names})
        for name in field_names:
            bodies.append({name: value})
    return bodies


def assert_envelope(response, context) -> None:
    assert response.status_code < 500, (context, response.status_code, response.content[:300])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"type", "code", "message", "param"}, (context, error)
        assert isinstance(error["code"], str) and error["code"], context


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("route", "method"), CASES, ids=lambda c: c if isinstance(c, str) else c.name
)
def test_no_client_input_causes_a_500(route, method, org_a):
    kwargs = {}
    if route.kwargs:
        viewset = route.org_scoped_viewset
        kwargs = viewset.url_kwargs_for(FACTORIES[viewset.model](org_a.org))
    url = reverse(route.name, kwargs=kwargs)
    names = fields_for(url, method)
    # Every answer is < 500 whatever the key's rights; the owner key gets the deepest.
    client = api_client(None if route.is_public else org_a.key("owner"))
    send = getattr(client, method)

    for raw in MALFORMED_JSON:
        response = send(url, data=raw, content_type="application/json")
        assert_envelope(response, (url, raw[:40]))
        if raw:
            assert response.status_code == 400, (url, raw[:40], response.content[:200])
    for body in payloads(names):
        response = send(url, data=json.dumps(body), content_type="application/json")
        assert_envelope(response, (url, str(body)[:80]))
    for content_type, raw in [
        ("text/plain", b"hello"),
        ("application/xml", b"<a/>"),
        ("application/json; charset=latin-1", '{"name": "caf\xe9"}'.encode("latin-1")),
        (
            "multipart/form-data; boundary=zz",
            b'--zz\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--zz--',
        ),
        ("multipart/form-data", b"no boundary"),
        ("application/x-www-form-urlencoded", b"email=a%40b.co&scopes=read&scopes=%00&role=owner"),
    ]:
        response = send(url, data=raw, content_type=content_type)
        assert_envelope(response, (url, content_type))
    oversized = b'{"name": "' + b"x" * (11 * 1024 * 1024) + b'"}'
    assert_envelope(
        send(url, data=oversized, content_type="application/json"), (url, "11 MiB body")
    )


def test_field_names_come_from_the_schema():
    assert fields_for("/v1/auth/signup", "post") == ["email", "organization_name", "password"]
    assert fields_for("/v1/members/mem_x", "patch") == ["role"]
