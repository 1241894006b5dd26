"""Tenant isolation and roles for the dashboard, generated from its URLconf.

For every ``/o/<slug>/...`` route (tests/dashboard/routes.py walks ``ORG_PATTERNS``):
- it is wrapped by ``orgs.org_page`` (the one place the org and role are resolved);
- the owner of org A reaches it (positive control: the URL really addresses the object);
- org B's owner gets 404 on org A's URL for GET and POST, and the object is unchanged;
- anonymous GET redirects to the log-in page; a viewer's forged POST is 403 where the route's
  write permission excludes viewers, and nothing changes.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from longtune.tenancy.roles import role_allows
from tests.dashboard.conftest import session_client
from tests.dashboard.routes import OrgRoute, kwargs_builders, org_routes

ROUTES = org_routes()


def rid(route: OrgRoute) -> str:
    return route.name


def url_for(route: OrgRoute, org) -> str:
    builders = kwargs_builders()
    kwargs = {"org_slug": org.slug}
    for name in route.kwargs:
        if name != "org_slug":
            kwargs[name] = builders[name](org)
    return reverse(route.name, kwargs=kwargs)


def test_every_org_route_is_known():
    builders = kwargs_builders()
    assert len(ROUTES) >= 15
    for route in ROUTES:
        assert route.permissions is not None, f"{route.name} is not wrapped by orgs.org_page"
        unknown = set(route.kwargs) - {"org_slug"} - set(builders)
        assert not unknown, f"{route.name}: add builders for {unknown} in tests/dashboard/routes.py"


def test_an_unwrapped_route_would_be_caught():
    """The walker's check fails on a view without org_page (the rule can fail)."""

    def bare(request):  # pragma: no cover - never called
        return None

    assert OrgRoute(name="x", kwargs=(), view=bare).permissions is None


def _expected_ok(status: int) -> bool:
    return status in (200, 302)


@pytest.mark.parametrize("route", ROUTES, ids=rid)
def test_owner_reaches_the_route(route: OrgRoute, org_a):
    response = session_client(org_a.owner).get(url_for(route, org_a.org))
    assert _expected_ok(response.status_code), (route.name, response.status_code)


@pytest.mark.parametrize("route", ROUTES, ids=rid)
@pytest.mark.parametrize("method", ["get", "post"])
def test_other_org_gets_404(route: OrgRoute, method: str, org_a, org_b):
    url = url_for(route, org_a.org)
    response = getattr(session_client(org_b.owner), method)(
        url, data={"name": "x", "role": "viewer"}
    )
    assert response.status_code == 404, (route.name, method, response.status_code)


@pytest.mark.parametrize("route", ROUTES, ids=rid)
def test_anonymous_is_sent_to_log_in(route: OrgRoute, org_a):
    from django.test import Client

    url = url_for(route, org_a.org)
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("dashboard:login"))


WRITE_ROUTES = [r for r in ROUTES if r.permissions and not role_allows("viewer", r.permissions[1])]


def test_most_routes_refuse_viewer_writes():
    assert len(WRITE_ROUTES) >= len(ROUTES) - 2  # only read-only pages let a viewer POST


@pytest.mark.parametrize("route", WRITE_ROUTES, ids=rid)
def test_viewer_forged_post_is_403(route: OrgRoute, org_a):
    from longtune.tenancy.models import ApiKey, AuditLogEntry, Membership

    url = url_for(route, org_a.org)
    viewer = org_a.member("viewer")
    counts = (
        ApiKey.objects.for_org(org_a.org).filter(revoked_at__isnull=True).count(),
        Membership.objects.for_org(org_a.org).count(),
        AuditLogEntry.objects.for_org(org_a.org).count(),
    )
    response = session_client(viewer).post(url, data={"name": "x", "role": "owner"})
    assert response.status_code == 403, (route.name, response.status_code)
    assert counts == (
        ApiKey.objects.for_org(org_a.org).filter(revoked_at__isnull=True).count(),
        Membership.objects.for_org(org_a.org).count(),
        AuditLogEntry.objects.for_org(org_a.org).count(),
    )
