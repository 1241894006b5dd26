"""API keys: authentication outcomes, one-time secret, caps on role and scope, revocation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from longtune.tenancy.models import ApiKey, AuditLogEntry
from longtune.tenancy.tokens import hash_secret
from tests.conftest import api_client

pytestmark = pytest.mark.django_db


def error_code(response) -> str:
    return response.json()["error"]["code"]


def test_key_authenticates_and_fixes_the_org(org_a):
    response = api_client(org_a.owner_secret).get("/v1/organization")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == org_a.org.public_id and body["object"] == "organization"
    assert body["quotas"]["requests_per_minute"] == 60  # free plan
    assert body["usage"]["requests_per_minute"] == 1


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("Bearer lt_" + "x" * 48, "invalid_api_key"),
        ("Bearer sk-not-ours", "invalid_api_key"),
        ("Bearer lt_a lt_b", "invalid_api_key"),
        ("Bearer " + "lt_" + "y" * 500, "invalid_api_key"),
    ],
)
def test_bad_keys_are_401_with_envelope(header, code):
    client = api_client()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/v1/organization")
    assert response.status_code == 401
    assert response.json()["error"] == {
        "type": "authentication_error",
        "code": code,
        "message": response.json()["error"]["message"],
        "param": None,
    }
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_expired_and_revoked_keys(org_a):
    expired = org_a.key("owner", expires_at=timezone.now() - timedelta(seconds=1))
    assert error_code(api_client(expired).get("/v1/organization")) == "api_key_expired"

    secret = org_a.key("owner")
    key = ApiKey.objects.unscoped_across_orgs().get(key_hash=hash_secret(secret))
    response = api_client(org_a.owner_secret).delete(f"/v1/api_keys/{key.public_id}")
    assert response.status_code == 200 and response.json()["revoked_at"] is not None
    revoked = api_client(secret).get("/v1/organization")
    assert revoked.status_code == 401 and error_code(revoked) == "api_key_revoked"
    # Revoking again is idempotent and logs once.
    api_client(org_a.owner_secret).delete(f"/v1/api_keys/{key.public_id}")
    assert (
        AuditLogEntry.objects.for_org(org_a.org)
        .filter(action="api_key.revoked", target_id=key.public_id)
        .count()
        == 1
    )


def test_create_returns_secret_once_and_stores_only_its_hash(org_a):
    client = api_client(org_a.owner_secret)
    response = client.post(
        "/v1/api_keys",
        {"name": "ci", "role": "member", "scopes": ["read"], "expires_in_days": 30},
        format="json",
    )
    assert response.status_code == 201, response.content
    created = response.json()
    secret = created["secret"]
    assert secret.startswith("lt_") and len(secret) == 51
    assert created["redacted_value"] == f"lt_...{secret[-4:]}"
    stored = ApiKey.objects.unscoped_across_orgs().get(public_id=created["id"])
    assert stored.key_hash == hash_secret(secret) and secret not in stored.key_hash
    listed = client.get("/v1/api_keys").json()
    assert created["id"] in [k["id"] for k in listed["data"]]
    assert secret not in str(listed) and "secret" not in listed["data"][0]
    assert "secret" not in client.get(f"/v1/api_keys/{created['id']}").json()
    # the new key works, with its own role and scopes
    assert api_client(secret).get("/v1/organization").status_code == 200
    assert (
        error_code(api_client(secret).post("/v1/api_keys", {}, format="json"))
        == "insufficient_scope"
    )


def test_a_key_cannot_grant_more_than_it_holds(org_a):
    admin = org_a.client("admin")
    too_high = admin.post("/v1/api_keys", {"role": "owner"}, format="json")
    assert too_high.status_code == 403 and error_code(too_high) == "role_exceeds_creator"
    narrow = org_a.key("admin", scopes=["read", "write"])
    wider = api_client(narrow).post("/v1/api_keys", {"scopes": ["inference"]}, format="json")
    assert wider.status_code == 403 and error_code(wider) == "scope_exceeds_creator"
    default = api_client(narrow).post("/v1/api_keys", {}, format="json").json()
    assert default["role"] == "admin" and default["scopes"] == ["read", "write"]


def test_member_cannot_manage_keys(org_a):
    response = org_a.client("member").get("/v1/api_keys")
    assert response.status_code == 403 and error_code(response) == "insufficient_role"


def test_last_used_at_is_written_at_most_once_a_minute(org_a, django_assert_num_queries):
    client = api_client(org_a.owner_secret)
    key = ApiKey.objects.unscoped_across_orgs().get(key_hash=hash_secret(org_a.owner_secret))
    assert key.last_used_at is None
    client.get("/v1/organization")
    first = ApiKey.objects.unscoped_across_orgs().get(pk=key.pk).last_used_at
    assert first is not None
    client.get("/v1/organization")
    assert ApiKey.objects.unscoped_across_orgs().get(pk=key.pk).last_used_at == first
    ApiKey.objects.unscoped_across_orgs().filter(pk=key.pk).update(
        last_used_at=first - timedelta(minutes=2)
    )
    client.get("/v1/organization")
    assert ApiKey.objects.unscoped_across_orgs().get(pk=key.pk).last_used_at > first


def test_authenticated_request_costs_one_query(org_a, django_assert_num_queries, monkeypatch):
    # Apps' usage providers (storage_bytes, jobs...) add their own queries to this view.
    monkeypatch.setattr("longtune.tenancy.quotas._USAGE_PROVIDERS", {})
    client = api_client(org_a.owner_secret)
    client.get("/v1/organization")  # the once-a-minute last_used_at write happens here
    with django_assert_num_queries(1):  # key + org + quota override + creator in one SELECT
        assert client.get("/v1/organization").status_code == 200
