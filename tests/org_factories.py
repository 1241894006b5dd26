"""Registry: org-owned model -> factory creating one instance inside a given organization.

The tenant-isolation test (tests/platform/test_tenant_isolation.py) walks every /v1/ route;
for an OrgScopedViewSet route it creates an object of the viewset's ``model`` in org A with the
factory registered here, then attacks it with org B's key. A route whose model has no factory
FAILS that test — so a new resource must register one::

    # tests/<app>/org_factories.py   (any module with this name under tests/ is loaded)
    from tests.org_factories import org_object_factory

    @org_object_factory(File)
    def make_file(org):
        return File.objects.create(org=org, ...)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from django.db import models

from longtune.tenancy.models import ApiKey, AuditLogEntry, Invitation, Membership, User

OrgObjectFactory = Callable[[models.Model], models.Model]
ORG_OBJECT_FACTORIES: dict[type[models.Model], OrgObjectFactory] = {}
TESTS_DIR = Path(__file__).resolve().parent


def org_object_factory(model: type[models.Model]) -> Callable[[OrgObjectFactory], OrgObjectFactory]:
    def register(factory: OrgObjectFactory) -> OrgObjectFactory:
        ORG_OBJECT_FACTORIES[model] = factory
        return factory

    return register


def load_all_factories() -> dict[type[models.Model], OrgObjectFactory]:
    """Import every tests/**/org_factories.py so their registrations run."""
    for path in sorted(TESTS_DIR.rglob("org_factories.py")):
        if path == Path(__file__).resolve():
            continue
        module = ".".join(("tests", *path.relative_to(TESTS_DIR).with_suffix("").parts))
        importlib.import_module(module)
    return ORG_OBJECT_FACTORIES


def owner_of(org):
    from longtune.tenancy.models import Membership

    return Membership.objects.for_org(org).filter(role="owner").select_related("user").first().user


# --- tenancy models ------------------------------------------------------------------------------


@org_object_factory(ApiKey)
def make_api_key(org):
    from longtune.tenancy.services.api_keys import issue_api_key

    key, _ = issue_api_key(org=org, created_by=owner_of(org), role="member", name="factory")
    return key


@org_object_factory(Membership)
def make_membership(org):
    count = User.objects.count()
    user = User.objects.create_user(
        email=f"factory-member-{count}-{org.slug}@example.com", password=None
    )
    return Membership.objects.create(org=org, user=user, role="member")


@org_object_factory(Invitation)
def make_invitation(org):
    from longtune.tenancy.services.invitations import create_invitation

    count = Invitation.objects.unscoped_across_orgs().count()
    invitation, _ = create_invitation(
        org=org,
        email=f"invitee-{count}-{org.slug}@example.com",
        role="member",
        invited_by=owner_of(org),
        actor_role="owner",
    )
    return invitation


@org_object_factory(AuditLogEntry)
def make_audit_entry(org):
    from longtune.tenancy import audit

    return audit.record(org=org, action="quota.changed", target=org, metadata={"factory": True})
