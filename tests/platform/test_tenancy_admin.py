"""Django admin: tenancy models are registered; keys and the audit log are read-only."""

from __future__ import annotations

import pytest
from django.test import Client

from longtune.tenancy.models import ApiKey, AuditLogEntry, User

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client() -> Client:
    admin = User.objects.create_superuser("staff@example.com", "staff-password-123")
    client = Client()
    client.force_login(admin)
    return client


def test_admin_pages_render(staff_client, org_a):
    key = ApiKey.objects.for_org(org_a.org).first()
    entry = AuditLogEntry.objects.for_org(org_a.org).first()
    for url in [
        "/admin/tenancy/organization/",
        f"/admin/tenancy/organization/{org_a.org.pk}/change/",
        "/admin/tenancy/user/",
        "/admin/tenancy/user/add/",
        "/admin/tenancy/apikey/",
        f"/admin/tenancy/apikey/{key.pk}/change/",
        "/admin/tenancy/auditlogentry/",
        f"/admin/tenancy/auditlogentry/{entry.pk}/change/",
        "/admin/tenancy/invitation/",
    ]:
        response = staff_client.get(url)
        assert response.status_code == 200, url
    change_page = staff_client.get(
        f"/admin/tenancy/organization/{org_a.org.pk}/change/"
    ).content.decode()
    assert "quota override" in change_page.lower() and "Memberships" in change_page
    assert staff_client.get("/admin/tenancy/apikey/add/").status_code == 403
    assert staff_client.get(f"/admin/tenancy/auditlogentry/{entry.pk}/delete/").status_code == 403


def test_staff_can_revoke_keys_from_the_admin(staff_client, org_a):
    key = ApiKey.objects.for_org(org_a.org).first()
    response = staff_client.post(
        "/admin/tenancy/apikey/", {"action": "revoke_selected", "_selected_action": [key.pk]}
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    revoked_entry = AuditLogEntry.objects.for_org(org_a.org).get(action="api_key.revoked")
    assert revoked_entry.actor_user.email == "staff@example.com"
