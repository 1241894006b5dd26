"""Landing, sign up, log in/out (throttled, no open redirect), the org switcher, CSRF, cookies."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from django.test import Client
from django.urls import reverse

from longtune.tenancy.models import ApiKey, Membership, Organization, User
from tests.conftest import TEST_PASSWORD
from tests.dashboard.conftest import session_client

pytestmark = pytest.mark.django_db


def test_landing_explains_and_offers_sign_up():
    response = Client().get("/")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'href="/signup"' in body and 'href="/login"' in body
    assert '<html lang="en">' in body


def test_landing_sends_a_member_to_their_org(org_a):
    response = session_client(org_a.owner).get("/")
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:overview", args=[org_a.org.slug])


def test_sign_up_mails_a_link_that_creates_the_org_and_logs_in(mailoutbox):
    client = Client()
    response = client.post(
        "/signup",
        {"email": "New@Example.com", "password": TEST_PASSWORD, "organization_name": "New Co"},
    )
    assert response.status_code == 200, response.content
    assert "Check your email" in response.content.decode()
    assert not Organization.objects.filter(name="New Co").exists()  # not before the link
    link = next(w for w in mailoutbox[0].body.split() if "/signup/confirm/" in w)
    path = link.split("testserver", 1)[1]
    assert client.get(path).status_code == 200  # a button: mail scanners only GET
    assert not Organization.objects.filter(name="New Co").exists()
    confirmed = client.post(path)
    user = User.objects.get(email="new@example.com")
    org = Organization.objects.get(name="New Co")
    assert Membership.objects.for_org(org).get(user=user).role == "owner"
    assert user.is_active and user.email_verified_at is not None  # the link proved the mailbox
    assert confirmed["Location"] == reverse("dashboard:overview", args=[org.slug])
    assert client.get(confirmed["Location"]).status_code == 200  # logged in
    assert Client().post(path).status_code == 400  # once


def test_sign_up_answers_the_same_for_a_registered_email(org_a, mailoutbox):
    pages = [
        Client().post(
            "/signup", {"email": email, "password": TEST_PASSWORD, "organization_name": "Dup"}
        )
        for email in (org_a.owner.email, "someone-new@example.com")
    ]
    assert [p.status_code for p in pages] == [200, 200]
    texts = [
        re.sub(r'"X-CSRFToken": "[^"]+"', "", p.content.decode().replace(e, "EMAIL"))
        for p, e in zip(pages, (org_a.owner.email, "someone-new@example.com"), strict=True)
    ]
    assert texts[0] == texts[1]
    assert "already has an account" in next(m for m in mailoutbox if org_a.owner.email in m.to).body


def test_sign_up_shows_the_api_errors_next_to_the_fields():
    weak = Client().post(
        "/signup", {"email": "weak@example.com", "password": "password", "organization_name": "W"}
    )
    assert weak.status_code == 400
    assert 'id="password-errors"' in weak.content.decode()
    assert not User.objects.filter(email="weak@example.com").exists()


def test_sign_up_needs_csrf():
    response = Client(enforce_csrf_checks=True).post(
        "/signup", {"email": "c@example.com", "password": TEST_PASSWORD, "organization_name": "C"}
    )
    assert response.status_code == 403
    assert not User.objects.filter(email="c@example.com").exists()


def test_log_in_and_out(org_a):
    client = Client()
    response = client.post("/login", {"username": org_a.owner.email, "password": TEST_PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:overview", args=[org_a.org.slug])
    assert client.post("/logout").status_code == 302
    assert client.get(reverse("dashboard:overview", args=[org_a.org.slug])).status_code == 302


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/x", "http:\\\\evil.example", "javascript:alert(1)"],
)
def test_log_in_never_redirects_off_site(org_a, target):
    response = Client().post(
        "/login", {"username": org_a.owner.email, "password": TEST_PASSWORD, "next": target}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:overview", args=[org_a.org.slug])


def test_log_in_follows_a_local_next(org_a):
    target = reverse("dashboard:files", args=[org_a.org.slug])
    response = Client().post(
        "/login", {"username": org_a.owner.email, "password": TEST_PASSWORD, "next": target}
    )
    assert response["Location"] == target


def test_log_in_is_throttled_after_repeated_failures(org_a, settings):
    settings.LOGIN_MAX_FAILURES = 3
    client = Client()
    for _ in range(3):
        bad = client.post("/login", {"username": org_a.owner.email, "password": "wrong"})
        assert bad.status_code == 200 and "_auth_user_id" not in client.session
    blocked = client.post("/login", {"username": org_a.owner.email, "password": TEST_PASSWORD})
    assert blocked.status_code == 200
    assert "Too many failed log-ins" in blocked.content.decode()
    assert "_auth_user_id" not in client.session


def test_org_switcher_lists_my_orgs_only(org_a, org_b, make_org):
    third = make_org("Third")
    Membership.objects.create(org=org_b.org, user=org_a.owner, role="viewer")
    client = session_client(org_a.owner)
    assert client.get("/")["Location"] == reverse("dashboard:orgs")  # several orgs: pick one
    page = client.get(reverse("dashboard:overview", args=[org_a.org.slug])).content.decode()
    assert f'value="{org_b.org.slug}"' in page and f'value="{third.org.slug}"' not in page
    switched = client.get(reverse("dashboard:switch_org"), {"org": org_b.org.slug})
    assert switched["Location"] == reverse("dashboard:overview", args=[org_b.org.slug])
    assert client.get(switched["Location"]).status_code == 200
    assert client.get(reverse("dashboard:overview", args=[third.org.slug])).status_code == 404


def test_org_pages_need_csrf(org_a):
    client = session_client(org_a.owner, enforce_csrf=True)
    response = client.post(reverse("dashboard:api_keys", args=[org_a.org.slug]), {"name": "k"})
    assert response.status_code == 403
    assert not ApiKey.objects.for_org(org_a.org).filter(name="k").exists()


def _settings_under(env: dict[str, str]) -> str:
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS > 0, "
        "s.SESSION_COOKIE_HTTPONLY)"
    )
    run_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "longtune.settings", **env}
    run_env["PYTHONPATH"] = os.pathsep.join(["platform", ".", run_env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", code], env=run_env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_secure_cookies_follow_the_https_flag():
    assert _settings_under({"LONGTUNE_HTTPS": "true"}) == "True True True True"
    assert _settings_under({"LONGTUNE_HTTPS": "false"}) == "False False False True"


def test_invitation_link_is_mailed_shown_once_and_accepted(org_a, mailoutbox):
    owner = session_client(org_a.owner)
    sent = owner.post(
        reverse("dashboard:invite", args=[org_a.org.slug]),
        {"email": "Invitee@Example.com", "role": "viewer"},
    )
    assert sent.status_code == 200 and sent["Cache-Control"] == "no-store"
    link = sent.context["link"]
    assert "/invite/" in link and link in mailoutbox[0].body
    assert mailoutbox[0].to == ["invitee@example.com"]
    listed = owner.get(reverse("dashboard:members", args=[org_a.org.slug])).content.decode()
    assert "invitee@example.com" in listed and link not in listed  # the token only once

    path = link.split("testserver", 1)[1]
    invitee = Client()
    wrong = invitee.post(path, {"email": "other@example.com", "password": TEST_PASSWORD})
    assert wrong.status_code == 400
    assert "No pending invitation" in " ".join(sum(wrong.context["errors"].values(), []))
    joined = invitee.post(path, {"email": "invitee@example.com", "password": TEST_PASSWORD})
    assert joined.status_code == 302
    assert joined["Location"] == reverse("dashboard:overview", args=[org_a.org.slug])
    user = User.objects.get(email="invitee@example.com")
    assert Membership.objects.for_org(org_a.org).get(user=user).role == "viewer"
    assert invitee.get(joined["Location"]).status_code == 200
    again = Client().post(path, {"email": "invitee@example.com", "password": TEST_PASSWORD})
    assert again.status_code == 400  # accepted: the link is spent


def test_an_admin_cannot_invite_an_owner(org_a, mailoutbox):
    admin = session_client(org_a.member("admin"))
    response = admin.post(
        reverse("dashboard:invite", args=[org_a.org.slug]),
        {"email": "boss@example.com", "role": "owner"},
        follow=True,
    )
    assert "Only owners can invite owners." in response.content.decode()
    assert not mailoutbox


def test_password_reset_by_email_link(org_a, mailoutbox):
    client = Client()
    assert client.get(reverse("dashboard:password_reset")).status_code == 200
    sent = client.post(reverse("dashboard:password_reset"), {"email": org_a.owner.email})
    assert sent["Location"] == reverse("dashboard:password_reset_done")
    unknown = client.post(reverse("dashboard:password_reset"), {"email": "nobody@example.com"})
    assert unknown["Location"] == sent["Location"]  # no probing for accounts
    assert len(mailoutbox) == 1 and mailoutbox[0].to == [org_a.owner.email]
    link = next(w for w in mailoutbox[0].body.split() if "/password/reset/" in w)
    path = link.split("testserver", 1)[1]
    form = client.get(path, follow=True)  # Django swaps the token for a session-held one
    assert form.context["validlink"]
    new = "a brand new password 99"
    done = client.post(form.redirect_chain[-1][0], {"new_password1": new, "new_password2": new})
    assert done["Location"] == reverse("dashboard:password_reset_complete")
    org_a.owner.refresh_from_db()
    assert org_a.owner.check_password(new)
    assert not Client().get(path, follow=True).context["validlink"]  # single use


def test_email_verification_link(org_a, mailoutbox):
    user = org_a.owner
    assert user.email_verified_at is None
    client = Client()
    client.force_login(user)
    overview = client.get("/", follow=True).content.decode()
    assert "Please confirm your email address" in overview
    client.post(reverse("dashboard:resend_verification"))
    link = next(w for w in mailoutbox[0].body.split() if "/verify-email/" in w)
    path = link.split("testserver", 1)[1]
    assert Client().get(path[:-3] + "xyz").status_code == 400  # a forged token
    assert client.get(path).status_code == 302
    user.refresh_from_db()
    assert user.email_verified_at is not None
    assert "Please confirm" not in client.get("/", follow=True).content.decode()


def test_verification_link_dies_with_an_email_change(mailoutbox):
    from longtune.dashboard.verification import make_token, user_for_token

    user = User.objects.create_user(email="old@example.com", password=TEST_PASSWORD)
    token = make_token(user)
    assert user_for_token(token) == user
    user.email = "new@example.com"
    user.save()
    assert user_for_token(token) is None


def test_resend_verification(org_a, mailoutbox):
    client = session_client(org_a.owner)
    response = client.post(
        reverse("dashboard:resend_verification"), {"next": "https://evil.example"}
    )
    assert response["Location"] == reverse("dashboard:overview", args=[org_a.org.slug])
    assert mailoutbox and mailoutbox[0].to == [org_a.owner.email]
