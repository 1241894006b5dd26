"""Tenant isolation, generated from the URLconf: every /v1/ route is attacked.

For each route found by walking ``get_resolver()`` (tests/platform/v1_routes.py):
- a route addressing an object by id must be an OrgScopedViewSet whose model has a factory in
  tests/org_factories.py (otherwise this test fails — register one);
- org B's key on org A's object -> 404 for every method, and the object is unchanged;
- org B's key on list/singleton routes never sees an id of org A's objects;
- a viewer key cannot write (403), an owner key with only scope "read" cannot write (403);
- no key -> 401.
Public routes are the named allow-list PUBLIC_ROUTES.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from longtune.tenancy.authentication import ApiKeyAuthentication
from longtune.tenancy.permissions import HasOrgRole
from tests.conftest import api_client
from tests.org_factories import load_all_factories
from tests.platform.v1_routes import PUBLIC_ROUTES, WRITE_METHODS, Route, v1_routes

ROUTES = v1_routes()
PROTECTED = [route for route in ROUTES if not route.is_public]
FACTORIES = load_all_factories()

ALL_CASES = [(route, method) for route in PROTECTED for method in route.methods]
DETAIL_CASES = [(route, method) for route, method in ALL_CASES if route.kwargs]
WRITE_CASES = [(route, method) for route, method in ALL_CASES if method in WRITE_METHODS]
COLLECTION_READS = [route for route in PROTECTED if not route.kwargs and "get" in route.methods]


def case_id(case) -> str:
    if isinstance(case, Route):
        return case.name
    return f"{case.upper()}" if isinstance(case, str) else str(case)


def snapshot(obj) -> dict:
    model = type(obj)
    fresh = model.objects.unscoped_across_orgs().get(pk=obj.pk)
    return {f.attname: getattr(fresh, f.attname) for f in model._meta.concrete_fields}


def target_for(route: Route, org):
    """(url, object or None): an object of the route's model created in ``org``."""
    viewset = route.org_scoped_viewset
    if viewset is None:
        return reverse(route.name), None
    obj = FACTORIES[viewset.model](org)
    kwargs = viewset.url_kwargs_for(obj) if route.kwargs else {}
    return reverse(route.name, kwargs=kwargs), obj


def call(client, method: str, url: str):
    if method in WRITE_METHODS:
        return getattr(client, method)(url, data={}, format="json")
    return getattr(client, method)(url)


def test_walker_sees_the_routes():
    names = {route.name for route in ROUTES}
    assert {"v1:api_key-list", "v1:api_key-detail", "v1:member-detail", "v1:organization"} <= names
    stale = set(PUBLIC_ROUTES) - names
    assert not stale, f"PUBLIC_ROUTES names routes that no longer exist: {stale}"
    assert DETAIL_CASES and WRITE_CASES and COLLECTION_READS


@pytest.mark.parametrize("route", PROTECTED, ids=case_id)
def test_every_protected_route_is_covered(route: Route):
    view = route.view_class()
    assert any(isinstance(a, ApiKeyAuthentication) for a in view.get_authenticators()), (
        f"{route} does not authenticate with API keys; add it to PUBLIC_ROUTES if it is public"
    )
    assert any(isinstance(p, HasOrgRole) for p in view.get_permissions()), (
        f"{route} is not guarded by HasOrgRole"
    )
    viewset = route.org_scoped_viewset
    if viewset is None:
        assert not route.kwargs, (
            f"{route} addresses an object by {route.kwargs} but is not an OrgScopedViewSet route"
        )
        return
    assert viewset.model in FACTORIES, (
        f"{route}: no factory for {viewset.model.__name__}; register one with "
        "@org_object_factory in tests/<app>/org_factories.py"
    )


@pytest.mark.parametrize(("route", "method"), DETAIL_CASES, ids=case_id)
def test_other_orgs_key_gets_404(route: Route, method: str, org_a, org_b):
    url, obj = target_for(route, org_a.org)
    before = snapshot(obj)
    if method == "get":  # positive control: the URL really addresses the object
        assert call(api_client(org_a.owner_secret), "get", url).status_code == 200
    response = call(api_client(org_b.owner_secret), method, url)
    assert response.status_code == 404, (route.name, method, response.content)
    assert response.json()["error"]["code"] == "not_found"
    assert snapshot(obj) == before, f"{method.upper()} {url} by another org changed the object"


@pytest.mark.parametrize("route", COLLECTION_READS, ids=case_id)
def test_other_orgs_key_sees_none_of_their_ids(route: Route, org_a, org_b):
    planted = [org_a.org.public_id, org_a.owner.public_id]
    planted += [factory(org_a.org).public_id for factory in FACTORIES.values()]
    response = api_client(org_b.owner_secret).get(reverse(route.name))
    assert response.status_code == 200, response.content
    body = response.content.decode()
    leaked = [public_id for public_id in planted if public_id in body]
    assert not leaked, f"{route} shows org A's ids to org B: {leaked}"


@pytest.mark.parametrize(("route", "method"), WRITE_CASES, ids=case_id)
def test_viewer_cannot_write(route: Route, method: str, org_a):
    url, obj = target_for(route, org_a.org)
    before = snapshot(obj) if obj is not None else None
    response = call(org_a.client("viewer"), method, url)
    assert response.status_code == 403, (route.name, method, response.content)
    assert response.json()["error"]["code"] == "insufficient_role"
    if obj is not None:
        assert snapshot(obj) == before


@pytest.mark.parametrize(("route", "method"), WRITE_CASES, ids=case_id)
def test_read_scope_key_cannot_write(route: Route, method: str, org_a):
    url, _ = target_for(route, org_a.org)
    response = call(org_a.client("owner", scopes=["read"]), method, url)
    assert response.status_code == 403, (route.name, method, response.content)
    assert response.json()["error"]["code"] == "insufficient_scope"


@pytest.mark.parametrize(("route", "method"), ALL_CASES, ids=case_id)
def test_no_key_is_401(route: Route, method: str, org_a):
    url, _ = target_for(route, org_a.org)
    response = call(api_client(None), method, url)
    assert response.status_code == 401, (route.name, method, response.content)
    assert response.json()["error"]["code"] == "missing_api_key"
