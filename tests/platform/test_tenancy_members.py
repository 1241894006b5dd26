"""Members, invitations, signup and the audit log through the API."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from longtune.tenancy.models import ApiKey, AuditLogEntry, Invitation, Membership
from longtune.tenancy.tokens import hash_secret
from tests.conftest import TEST_PASSWORD, api_client, signup_and_confirm, signup_token

pytestmark = pytest.mark.django_db


def error_code(response) -> str:
    return response.json()["error"]["code"]


def membership(handle, role: str) -> Membership:
    return Membership.objects.for_org(handle.org).get(user=handle.member(role))


def test_signup_creates_org_owner_and_working_key(mailoutbox):
    body = signup_and_confirm("New@Example.com", TEST_PASSWORD, "New Co")
    assert body["user"]["email"] == "new@example.com"
    assert body["organization"]["slug"] == "new-co"
    assert body["api_key"]["role"] == "owner" and body["api_key"]["secret"].startswith("lt_")
    org = api_client(body["api_key"]["secret"]).get("/v1/organization").json()
    assert org["id"] == body["organization"]["id"]
    # The link works once.
    token = signup_token(mailoutbox, "new@example.com")
    reused = api_client().post("/v1/auth/signup/confirm", {"token": token}, format="json")
    assert reused.status_code == 404 and error_code(reused) == "invalid_signup_token"


def test_signup_does_not_reveal_whether_an_email_is_registered(mailoutbox):
    signup_and_confirm("taken@example.com", TEST_PASSWORD, "First")
    mailoutbox.clear()
    answers = [
        api_client().post(
            "/v1/auth/signup",
            {"email": email, "password": TEST_PASSWORD, "organization_name": "Dup"},
            format="json",
        )
        for email in ("taken@example.com", "fresh@example.com")
    ]
    assert [a.status_code for a in answers] == [202, 202]
    bodies = [{k: v for k, v in a.json().items() if k != "email"} for a in answers]
    assert bodies[0] == bodies[1]  # same answer; only the mails differ
    taken, fresh = (
        next(m for m in mailoutbox if e in m.to) for e in ("taken@example.com", "fresh@example.com")
    )
    assert "already has an account" in taken.body and '"token"' not in taken.body
    assert '"token"' in fresh.body
    assert (
        Membership.objects.unscoped_across_orgs().filter(user__email="taken@example.com").count()
        == 1
    )
    # The pending account can neither log in nor be confirmed with a forged token.
    from longtune.tenancy.models import User

    assert not User.objects.get(email="fresh@example.com").is_active
    forged = api_client().post("/v1/auth/signup/confirm", {"token": "x" * 40}, format="json")
    assert forged.status_code == 404 and error_code(forged) == "invalid_signup_token"


def test_password_reset_answers_the_same_for_any_email(mailoutbox):
    signup_and_confirm("member@example.com", TEST_PASSWORD, "Reset Co")
    mailoutbox.clear()
    answers = [
        api_client().post("/v1/auth/password_reset", {"email": email}, format="json")
        for email in ("member@example.com", "nobody@example.com")
    ]
    assert [a.status_code for a in answers] == [202, 202]
    assert [{k: v for k, v in a.json().items() if k != "email"} for a in answers][0] == {
        k: v for k, v in answers[1].json().items() if k != "email"
    }
    assert [m.to for m in mailoutbox] == [["member@example.com"]]
    assert "/password/reset/" in mailoutbox[0].body


def test_signup_rejects_weak_password_and_is_ip_throttled(settings):
    weak = api_client().post(
        "/v1/auth/signup",
        {"email": "a@b.co", "password": "password", "organization_name": "X"},
        format="json",
    )
    assert weak.status_code == 400 and weak.json()["error"]["param"] == "password"
    settings.PUBLIC_ENDPOINT_REQUESTS_PER_HOUR = 2
    client = api_client()
    assert (
        client.post("/v1/auth/signup", {}, format="json").status_code == 400
    )  # 2nd of 2 this hour
    limited = client.post("/v1/auth/signup", {}, format="json")
    assert limited.status_code == 429 and error_code(limited) == "rate_limit_exceeded"
    assert int(limited.headers["Retry-After"]) >= 1


def test_role_change_rules(org_a):
    admin = org_a.client("admin")
    owner_membership = membership(org_a, "owner")
    # admins cannot touch owners, nor grant owner
    denied = admin.patch(
        f"/v1/members/{owner_membership.public_id}", {"role": "member"}, format="json"
    )
    assert denied.status_code == 403 and error_code(denied) == "owner_protected"
    member = membership(org_a, "member")
    promote = admin.patch(f"/v1/members/{member.public_id}", {"role": "owner"}, format="json")
    assert promote.status_code == 403 and error_code(promote) == "owner_protected"
    ok = admin.patch(f"/v1/members/{member.public_id}", {"role": "admin"}, format="json")
    assert ok.status_code == 200 and ok.json()["role"] == "admin"
    # the last owner cannot be demoted or removed, not even by themself
    owner = api_client(org_a.owner_secret)
    last = owner.patch(
        f"/v1/members/{owner_membership.public_id}", {"role": "admin"}, format="json"
    )
    assert last.status_code == 409 and error_code(last) == "last_owner"
    assert error_code(owner.delete(f"/v1/members/{owner_membership.public_id}")) == "last_owner"
    # with a second owner, demotion works
    owner.patch(f"/v1/members/{member.public_id}", {"role": "owner"}, format="json")
    demoted = owner.patch(
        f"/v1/members/{owner_membership.public_id}", {"role": "admin"}, format="json"
    )
    assert demoted.status_code == 200
    bad = owner.patch(f"/v1/members/{member.public_id}", {"role": "god"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "role"


def test_demotion_clamps_keys_and_removal_revokes_them(org_a):
    admin_secret = org_a.key("admin")
    admin_membership = membership(org_a, "admin")
    owner = api_client(org_a.owner_secret)
    owner.patch(f"/v1/members/{admin_membership.public_id}", {"role": "viewer"}, format="json")
    assert (
        ApiKey.objects.unscoped_across_orgs().get(key_hash=hash_secret(admin_secret)).role
        == "viewer"
    )
    assert error_code(api_client(admin_secret).get("/v1/api_keys")) == "insufficient_role"
    assert owner.delete(f"/v1/members/{admin_membership.public_id}").status_code == 204
    assert error_code(api_client(admin_secret).get("/v1/organization")) == "api_key_revoked"
    actions = list(AuditLogEntry.objects.for_org(org_a.org).values_list("action", flat=True))
    assert {"member.role_changed", "member.removed", "api_key.revoked"} <= set(actions)


def test_invitation_flow(org_a):
    owner = api_client(org_a.owner_secret)
    created = owner.post(
        "/v1/invitations", {"email": "Bob@Example.com", "role": "member"}, format="json"
    )
    assert created.status_code == 201, created.content
    token = created.json()["token"]
    assert created.json()["status"] == "pending" and created.json()["email"] == "bob@example.com"
    assert "token" not in owner.get(f"/v1/invitations/{created.json()['id']}").json()
    dup = owner.post("/v1/invitations", {"email": "bob@example.com"}, format="json")
    assert dup.status_code == 409 and error_code(dup) == "invitation_exists"

    wrong_email = api_client().post(
        "/v1/invitations/accept",
        {"token": token, "email": "eve@example.com", "password": TEST_PASSWORD},
        format="json",
    )
    assert wrong_email.status_code == 404 and error_code(wrong_email) == "invalid_invitation"
    accepted = api_client().post(
        "/v1/invitations/accept",
        {"token": token, "email": "bob@example.com", "password": TEST_PASSWORD},
        format="json",
    )
    assert accepted.status_code == 201, accepted.content
    body = accepted.json()
    assert body["member"]["role"] == "member" and body["organization"]["id"] == org_a.org.public_id
    bob = api_client(body["api_key"]["secret"])
    assert bob.get("/v1/members").status_code == 200
    reused = api_client().post(
        "/v1/invitations/accept",
        {"token": token, "email": "bob@example.com", "password": TEST_PASSWORD},
        format="json",
    )
    assert reused.status_code == 400 and error_code(reused) == "invitation_accepted"
    actions = set(AuditLogEntry.objects.for_org(org_a.org).values_list("action", flat=True))
    assert {"invitation.created", "invitation.accepted", "member.added"} <= actions


def test_invitation_role_caps_expiry_and_revocation(org_a):
    admin = org_a.client("admin")
    assert error_code(
        admin.post("/v1/invitations", {"email": "o@x.co", "role": "owner"}, format="json")
    ) == ("owner_protected")
    created = admin.post("/v1/invitations", {"email": "late@x.co"}, format="json").json()
    Invitation.objects.unscoped_across_orgs().filter(public_id=created["id"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    late = api_client().post(
        "/v1/invitations/accept",
        {"token": created["token"], "email": "late@x.co", "password": TEST_PASSWORD},
        format="json",
    )
    assert late.status_code == 400 and error_code(late) == "invitation_expired"
    fresh = admin.post("/v1/invitations", {"email": "gone@x.co"}, format="json").json()
    assert admin.delete(f"/v1/invitations/{fresh['id']}").json()["status"] == "revoked"
    revoked = api_client().post(
        "/v1/invitations/accept",
        {"token": fresh["token"], "email": "gone@x.co", "password": TEST_PASSWORD},
        format="json",
    )
    assert error_code(revoked) == "invitation_revoked"
    member = admin.post("/v1/invitations", {"email": org_a.owner.email}, format="json")
    assert member.status_code == 409 and error_code(member) == "already_member"


def test_audit_log_is_cursor_paginated_and_admin_only(org_a):
    owner = api_client(org_a.owner_secret)
    for n in range(5):
        owner.post("/v1/api_keys", {"name": f"k{n}"}, format="json")
    total = AuditLogEntry.objects.for_org(org_a.org).count()
    seen, after = [], None
    while True:
        page = owner.get(
            "/v1/audit_logs", {"limit": 2, **({"after": after} if after else {})}
        ).json()
        assert page["object"] == "list" and len(page["data"]) <= 2
        seen += [entry["id"] for entry in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
        assert page["first_id"] == page["data"][0]["id"]
    assert len(seen) == len(set(seen)) == total
    newest = AuditLogEntry.objects.for_org(org_a.org).order_by("-pk").first()
    assert seen[0] == newest.public_id and newest.actor_api_key is not None
    entry = owner.get(f"/v1/audit_logs/{newest.public_id}").json()
    assert entry["actor"]["type"] == "api_key" and entry["action"] == "api_key.created"
    assert entry["ip_address"] == "127.0.0.1"
    assert error_code(org_a.client("member").get("/v1/audit_logs")) == "insufficient_role"
    for bad in (
        {"limit": 0},
        {"limit": 101},
        {"limit": "x"},
        {"limit": ""},
        {"after": ""},
        {"after": "\x00"},
    ):
        response = owner.get("/v1/audit_logs", bad)
        assert response.status_code == 400, bad
        assert response.json()["error"]["param"] in ("limit", "after")
    # A well-formed id that names nothing in the list (another org's included): 404.
    unknown = owner.get("/v1/audit_logs", {"after": "audit_nope"})
    assert unknown.status_code == 404 and error_code(unknown) == "cursor_not_found"
    assert unknown.json()["error"]["param"] == "after"
