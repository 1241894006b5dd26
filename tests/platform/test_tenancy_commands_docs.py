"""create_org command, the permissions doc, the OpenAPI schema and its docs page."""

from __future__ import annotations

import io
import json
import re

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from openapi_spec_validator import validate

from longtune.tenancy.models import Membership, Organization
from longtune.tenancy.roles import render_permissions_markdown
from tests.conftest import api_client


@pytest.mark.django_db
def test_create_org_prints_a_working_key_and_is_rerunnable():
    def run(password: str = "pw-for-the-quickstart-1") -> str:
        out = io.StringIO()
        call_command(
            "create_org",
            email="Dev@Example.com",
            org="Quick Start",
            password=password,
            stdout=out,
            stderr=io.StringIO(),
        )
        return out.getvalue().strip()

    first = run()
    assert first.startswith("lt_") and "\n" not in first
    body = api_client(first).get("/v1/organization").json()
    assert body["name"] == "Quick Start"
    second = run()
    assert second != first and api_client(second).get("/v1/organization").json()["id"] == body["id"]
    assert Organization.objects.filter(name="Quick Start").count() == 1
    assert (
        Membership.objects.unscoped_across_orgs().get(user__email="dev@example.com").role == "owner"
    )
    with pytest.raises(CommandError, match="invalid_credentials"):
        run("wrong-password-entirely")


def test_permissions_doc_matches_the_matrix():
    path = settings.BASE_DIR / "docs" / "permissions.md"
    assert path.read_text() == render_permissions_markdown(), (
        "docs/permissions.md is stale: run `python manage.py write_permissions_doc`"
    )


def test_openapi_schema_generates_without_warnings_and_validates(tmp_path):
    target = tmp_path / "openapi.json"
    # --fail-on-warn turns any drf-spectacular warning or error into a failure.
    call_command("spectacular", "--fail-on-warn", "--format", "openapi-json", "--file", str(target))
    schema = json.loads(target.read_text())
    validate(schema)
    assert "/v1/api_keys/{id}" in schema["paths"]
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"]["scheme"] == "bearer"


@pytest.mark.django_db
def test_schema_and_docs_are_served_without_a_cdn():
    schema = api_client().get("/v1/openapi.json")
    assert schema.status_code == 200 and schema.json()["openapi"].startswith("3.")
    page = api_client().get("/v1/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui" in html
    # No asset from a CDN or any other host: every src/href is a local path, and no URL names
    # a CDN. (A bare "cdn" substring check was flaky: the page carries a random CSRF token.)
    assert not re.search(r"//[^\s\"'`]*(cdn|unpkg|jsdelivr)", html, re.IGNORECASE)
    links = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert links and all(link.startswith("/") and not link.startswith("//") for link in links)
    bundle = next(part for part in html.split('"') if part.endswith("swagger-ui-bundle.js"))
    assert bundle.startswith("/static/")
    assert b"".join(api_client().get(bundle).streaming_content)[:100]
