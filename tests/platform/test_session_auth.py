"""The second door: a logged-in user acting in one of their orgs (the dashboard's principal).

Same ``request.org`` / ``request.role`` as an API key; the org comes from the URL kwarg
``org_slug``, the ``LongTune-Organization`` header or the user's only membership; a
non-member sees "not found", never another org's data; CSRF is enforced.
"""

from __future__ import annotations

import pytest
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory

from longtune.datasets.models import File
from longtune.tenancy.authentication import ORG_HEADER, SessionOrgAuthentication
from longtune.tenancy.models import ApiKey, Membership, User
from tests.conftest import TEST_PASSWORD, api_client
from tests.org_factories import load_all_factories

pytestmark = pytest.mark.django_db


def session_client(user, *, org=None, enforce_csrf: bool = False) -> APIClient:
    client = APIClient(enforce_csrf_checks=enforce_csrf)
    client.force_login(user)
    if org is not None:
        client.credentials(**{"HTTP_" + ORG_HEADER.upper().replace("-", "_"): org.slug})
    return client


def make_file(org) -> File:
    return load_all_factories()[File](org)


def error_code(response) -> str:
    return response.json()["error"]["code"]


def test_a_session_reads_its_only_org(org_a, org_b):
    mine, theirs = make_file(org_a.org), make_file(org_b.org)
    response = session_client(org_a.owner).get("/v1/files")
    assert response.status_code == 200, response.content
    ids = {f["id"] for f in response.json()["data"]}
    assert mine.public_id in ids and theirs.public_id not in ids


def test_a_session_gets_404_for_another_orgs_object(org_a, org_b):
    theirs = make_file(org_b.org)
    client = session_client(org_a.owner)
    assert client.get(f"/v1/files/{theirs.public_id}").status_code == 404
    assert client.delete(f"/v1/files/{theirs.public_id}").status_code == 404
    assert File.objects.for_org(org_b.org).filter(pk=theirs.pk).exists()


def test_naming_an_org_you_are_not_a_member_of_is_not_found(org_a, org_b):
    make_file(org_b.org)
    response = session_client(org_a.owner, org=org_b.org).get("/v1/files")
    assert response.status_code == 404
    assert error_code(response) == "organization_not_found"
    unknown = session_client(org_a.owner)
    unknown.credentials(HTTP_LONGTUNE_ORGANIZATION="no-such-org")
    same = unknown.get("/v1/files")
    assert same.status_code == 404 and same.json() == response.json()  # no probing for slugs


def test_a_member_of_several_orgs_names_one_and_gets_that_role(org_a, org_b):
    user = org_a.owner
    Membership.objects.create(org=org_b.org, user=user, role="viewer")
    ambiguous = session_client(user).get("/v1/files")
    assert ambiguous.status_code == 401 and error_code(ambiguous) == "organization_required"

    theirs = make_file(org_b.org)
    in_b = session_client(user, org=org_b.org)
    listed = in_b.get("/v1/files")
    assert [f["id"] for f in listed.json()["data"]] == [theirs.public_id]
    # viewer in B: a session holds the scopes of its role (read only) ...
    denied = in_b.delete(f"/v1/files/{theirs.public_id}")
    assert denied.status_code == 403 and error_code(denied) == "insufficient_scope"
    # ... and the role's permissions: viewers do not list API keys
    keys = in_b.get("/v1/api_keys")
    assert keys.status_code == 403 and error_code(keys) == "insufficient_role"
    # owner in A: the same user, another org, another role
    assert session_client(user, org=org_a.org).get("/v1/api_keys").status_code == 200


def test_a_user_without_an_org_is_refused(db):
    user = User.objects.create_user(email="lonely@example.com", password=TEST_PASSWORD)
    response = session_client(user).get("/v1/files")
    assert response.status_code == 401 and error_code(response) == "no_organization"


def test_the_url_kwarg_wins_over_the_header(org_a, org_b):
    user = org_a.owner
    Membership.objects.create(org=org_b.org, user=user, role="member")
    django_request = APIRequestFactory().get(
        "/o/x/files", HTTP_LONGTUNE_ORGANIZATION=org_a.org.slug
    )
    django_request.user = user
    request = Request(django_request, parser_context={"kwargs": {"org_slug": org_b.org.slug}})
    assert SessionOrgAuthentication().authenticate(request) == (user, None)
    assert django_request.org == org_b.org and django_request.role == "member"
    assert django_request.api_key is None


def test_csrf_is_enforced_for_sessions(org_a):
    client = session_client(org_a.owner, enforce_csrf=True)
    response = client.post("/v1/api_keys", {"name": "from the dashboard"}, format="json")
    assert response.status_code == 403 and "CSRF" in response.json()["error"]["message"]
    assert client.get("/v1/files").status_code == 200  # safe methods need no token


def test_a_session_creates_an_api_key_as_its_user_and_role(org_a):
    member = org_a.member("admin")
    response = session_client(member).post("/v1/api_keys", {"name": "mine"}, format="json")
    assert response.status_code == 201, response.content
    key = ApiKey.objects.for_org(org_a.org).get(public_id=response.json()["id"])
    assert key.created_by == member and key.role == "admin"
    assert sorted(key.scopes) == ["inference", "read", "write"]


def test_an_api_key_still_decides_the_org_over_a_session(org_a, org_b):
    theirs = make_file(org_b.org)
    client = api_client(org_b.key())
    client.force_login(org_a.owner)
    assert client.get(f"/v1/files/{theirs.public_id}").status_code == 200
