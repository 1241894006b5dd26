"""Fail-closed org scoping: the runtime guard, the AST scan, and OrgScopedViewSet's protected
methods. Each rule is also shown failing on a violating example built inside the test."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import models
from django.db.models import Count
from rest_framework import mixins

from longtune.api.viewsets import PROTECTED_ATTRIBUTES, OrgScopedViewSet
from longtune.datasets.models import File
from longtune.tenancy.models import ApiKey, AuditLogEntry, Membership, Organization
from longtune.tenancy.models.audit import AuditLogIsAppendOnly
from longtune.tenancy.scoping import (
    OrgScopedQuerySet,
    UnscopedQueryError,
    across_orgs,
    is_org_owned,
    org_scoped_manager,
)
from tests.platform.scoping_scan import scan_source, scan_tree

REPO = Path(__file__).resolve().parents[2]
SCOPING_MODULE = REPO / "platform" / "longtune" / "tenancy" / "scoping.py"

ORG_OWNED = sorted((m for m in apps.get_models() if is_org_owned(m)), key=lambda m: m._meta.label)
ORG_OWNED_NAMES = frozenset(m.__name__ for m in ORG_OWNED)

# Every way an unscoped queryset could reach the database.
UNSCOPED_USES = {
    "evaluate": lambda qs: list(qs.all()),
    "filter+iterate": lambda qs: list(qs.filter(pk=1)),
    "first": lambda qs: qs.first(),
    "get": lambda qs: qs.get(pk=1),
    "count": lambda qs: qs.count(),
    "exists": lambda qs: qs.exists(),
    "aggregate": lambda qs: qs.aggregate(n=Count("pk")),
    "update": lambda qs: qs.filter(pk=-1).update(pk=-1),
    "delete": lambda qs: qs.filter(pk=-1).delete(),
    "iterator": lambda qs: list(qs.iterator()),
    "values": lambda qs: list(qs.values("pk")),
    "values_list": lambda qs: list(qs.values_list("pk", flat=True)),
    "in_bulk": lambda qs: qs.in_bulk([1]),
    "get_or_create": lambda qs: qs.get_or_create(pk=-1),
    "update_or_create": lambda qs: qs.update_or_create(pk=-1),
    "chained": lambda qs: list(qs.select_related().order_by("-pk").exclude(pk=1)[:3]),
    "subquery": lambda qs: list(
        qs.model.objects.unscoped_across_orgs().filter(pk__in=qs.values("pk"))
    ),
}


def test_org_owned_models_are_enumerated():
    names = {m.__name__ for m in ORG_OWNED}
    assert {"File", "FineTuningJob", "Endpoint", "Membership", "ApiKey", "AuditLogEntry"} <= names
    assert "Organization" not in names and "User" not in names


def test_every_model_owned_by_an_org_has_the_guarded_manager():
    """A new model with a required ``org`` FK must use OrgScopedManager (or be listed here)."""
    shared_with_org_override = {"BaseModel"}  # public models, optionally private to one org
    missing = [
        m._meta.label
        for m in apps.get_models()
        for f in m._meta.concrete_fields
        if f.name == "org"
        and f.is_relation
        and f.related_model is Organization
        and not is_org_owned(m)
        and m.__name__ not in shared_with_org_override
    ]
    assert missing == []


@pytest.mark.django_db
@pytest.mark.parametrize("use", UNSCOPED_USES, ids=list(UNSCOPED_USES))
@pytest.mark.parametrize("model", ORG_OWNED, ids=lambda m: m.__name__)
def test_unscoped_use_of_every_org_owned_model_is_refused(model, use):
    if model is AuditLogEntry and use in ("update", "delete"):
        with pytest.raises(AuditLogIsAppendOnly):  # refused before the scope is even asked
            UNSCOPED_USES[use](model.objects)
        return
    with pytest.raises(UnscopedQueryError) as refused:
        UNSCOPED_USES[use](model.objects)
    message = str(refused.value)
    assert model.__name__ in message
    assert "for_org(org)" in message and "unscoped_across_orgs()" in message


@pytest.mark.django_db
@pytest.mark.parametrize("model", ORG_OWNED, ids=lambda m: m.__name__)
def test_scoped_and_explicitly_unscoped_queries_run(model, org_a):
    assert list(model.objects.for_org(org_a.org).filter(pk=-1)) == []
    assert model.objects.unscoped_across_orgs().filter(pk=-1).count() == 0
    assert list(model.objects.none()) == []  # empty: reads nothing, needs no scope
    assert "not scoped" in repr(model.objects.all())  # repr does not hit the guard


@pytest.mark.django_db
def test_for_org_reads_one_org_and_the_hatch_reads_all(org_a, org_b):
    # create_organization_with_owner wrote memberships and audit entries in both orgs
    mine = Membership.objects.for_org(org_a.org)
    assert {m.org_id for m in mine} == {org_a.org.pk}
    everyone = Membership.objects.unscoped_across_orgs()
    assert {org_a.org.pk, org_b.org.pk} <= {m.org_id for m in everyone}
    # the flag survives chaining, in either order
    chained = Membership.objects.filter(role="owner").for_org(org_b.org).order_by("-pk")
    assert list(chained.values_list("org_id", flat=True)) == [org_b.org.pk]
    assert chained.values("pk").count() == 1
    assert AuditLogEntry.objects.for_org(org_a.org).exists()


def test_for_org_needs_a_saved_org():
    with pytest.raises(ValueError):
        File.objects.for_org(None)
    with pytest.raises(ValueError):
        File.objects.for_org(Organization(name="unsaved"))


@pytest.mark.django_db
def test_related_managers_are_scoped_through_their_parent(org_a, org_b):
    org_a.key("member")
    assert org_a.org.memberships.count() == 2
    assert {m.org_id for m in org_a.org.memberships.all()} == {org_a.org.pk}
    assert org_a.owner.memberships.get().org_id == org_a.org.pk  # parent: a user
    assert org_a.org.audit_log.filter(action="organization.created").exists()
    key = ApiKey.objects.for_org(org_a.org).first()
    assert key.org.pk == org_a.org.pk  # FK descriptors use _base_manager: untouched


@pytest.mark.django_db
def test_create_and_unique_validation_need_no_scope(org_a, org_b):
    membership = Membership.objects.create(org=org_b.org, user=org_a.owner, role="member")
    assert membership.pk is not None
    duplicate = Membership(org=org_b.org, user=org_a.owner, role="viewer")
    with pytest.raises(ValidationError) as invalid:  # unique (org, user), via the hatch
        duplicate.full_clean()
    assert "already exists" in str(invalid.value)


@pytest.mark.django_db
def test_across_orgs_block_opens_and_closes():
    with across_orgs():
        assert Membership.objects.filter(pk=-1).count() == 0
    with pytest.raises(UnscopedQueryError):
        Membership.objects.filter(pk=-1).count()


def test_org_scoped_manager_keeps_the_model_queryset_methods():
    class ActiveQuerySet(OrgScopedQuerySet):
        def active(self) -> OrgScopedQuerySet:
            return self.filter(pk__gt=0)

    manager = org_scoped_manager(ActiveQuerySet)
    assert hasattr(manager, "active") and hasattr(manager, "for_org")
    with pytest.raises(TypeError):
        org_scoped_manager(models.QuerySet)


# --- the AST scan ---------------------------------------------------------------------------


def test_no_unscoped_manager_use_in_platform_or_workers():
    found = scan_tree(REPO / "platform", ORG_OWNED_NAMES, exempt=[SCOPING_MODULE])
    found += scan_tree(REPO / "workers", ORG_OWNED_NAMES)
    assert [str(v) for v in found] == [], (
        "Read org-owned models through .objects.for_org(org), or .objects.unscoped_across_orgs() "
        "where the code spans organizations."
    )


ACROSS_ORGS_USERS = {SCOPING_MODULE, REPO / "platform/longtune/tenancy/cross_org_admin.py"}


def modules_using_across_orgs(root: Path) -> set[Path]:
    """Files that name ``across_orgs`` (the block form of the hatch) anywhere in their code."""
    return {
        path
        for path in root.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if (isinstance(node, ast.Name) and node.id == "across_orgs")
        or (isinstance(node, ast.alias) and node.name == "across_orgs")
        or (isinstance(node, ast.Attribute) and node.attr == "across_orgs")
    }


def test_the_block_hatch_is_used_only_by_the_scoping_module_and_the_admin(tmp_path):
    users = modules_using_across_orgs(REPO / "platform") | modules_using_across_orgs(
        REPO / "workers"
    )
    assert users == ACROSS_ORGS_USERS
    (tmp_path / "views.py").write_text(
        "from longtune.tenancy.scoping import across_orgs\n"
        "def leak():\n    with across_orgs():\n        return list(File.objects.all())\n"
    )
    assert modules_using_across_orgs(tmp_path) == {tmp_path / "views.py"}


VIOLATING_SOURCE = """
from longtune.datasets.models import File
from longtune.finetuning.models import FineTuningJob as Job
from longtune.tenancy.models import User

def leaks(org):
    File.objects.filter(org=org).first()       # line 7: filter
    Job.objects.get(pk=1)                       # line 8: an alias
    manager = File.objects                      # line 9: passed around bare
    return manager

def fine(org):
    File.objects.for_org(org).filter(purpose="fine-tune")
    File.objects.unscoped_across_orgs().count()
    File.objects.create(org=org)
    File.objects.none()
    User.objects.filter(email="x")              # not org-owned
"""


def test_the_scan_flags_a_violating_snippet():
    found = scan_source(VIOLATING_SOURCE, ORG_OWNED_NAMES)
    assert sorted((v.line, v.model, v.call) for v in found) == [
        (7, "File", "filter"),
        (8, "FineTuningJob", "get"),
        (9, "File", None),
    ]


def test_the_scan_fails_on_a_violating_tree(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "views.py").write_text(VIOLATING_SOURCE)
    (tmp_path / "pkg" / "migrations").mkdir()
    (tmp_path / "pkg" / "migrations" / "0001.py").write_text("File.objects.all()\n")
    found = scan_tree(tmp_path, ORG_OWNED_NAMES)
    assert len(found) == 3 and all(v.path.endswith("views.py") for v in found)


# --- OrgScopedViewSet's protected methods ---------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROTECTED_ATTRIBUTES))
def test_a_viewset_overriding_a_protected_method_is_refused(name):
    value = (lambda self, *a, **k: None) if name.startswith("get_") else []
    with pytest.raises(ImproperlyConfigured) as refused:
        type("SneakyViewSet", (OrgScopedViewSet,), {"model": File, name: value})
    message = str(refused.value)
    assert f"SneakyViewSet.{name} is protected" in message
    assert PROTECTED_ATTRIBUTES[name] in message  # the reason and the sanctioned hook


def test_a_mixin_cannot_smuggle_a_protected_override_in():
    class ObjectMixin:
        def get_object(self):
            return None

    with pytest.raises(ImproperlyConfigured, match="get_object is protected"):

        class SneakyViewSet(ObjectMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
            model = File


def test_the_sanctioned_hooks_are_accepted():
    class FileByNameViewSet(mixins.RetrieveModelMixin, OrgScopedViewSet):
        model = File
        required_permissions = {"retrieve": "resources.read"}

        def safely_get_queryset(self, queryset):
            return queryset.filter(purpose="fine-tune")

        def safely_get_object(self, queryset):
            return queryset.get(filename=self.kwargs["id"])

    assert FileByNameViewSet.lookup_value_regex  # set from the model's public-id prefix


# --- the admin goes through the hatch -------------------------------------------------------


@pytest.mark.django_db
def test_every_org_owned_admin_page_renders_across_orgs(org_a, org_b, admin_client):
    from django.contrib import admin

    from longtune.tenancy.cross_org_admin import CrossOrgAdminMixin
    from tests.org_factories import load_all_factories

    factories = load_all_factories()
    registered = [m for m in admin.site._registry if is_org_owned(m)]
    assert len(registered) >= 10
    for model in registered:
        model_admin = admin.site._registry[model]
        assert isinstance(model_admin, CrossOrgAdminMixin), model.__name__
        opts = model._meta
        changelist = f"/admin/{opts.app_label}/{opts.model_name}/"
        assert admin_client.get(changelist).status_code == 200, changelist
        if model in factories:
            objs = [factories[model](org_a.org), factories[model](org_b.org)]
            listed = admin_client.get(changelist).context["cl"].queryset
            assert {o.pk for o in objs} <= set(listed.values_list("pk", flat=True)), changelist
            change = f"{changelist}{objs[1].pk}/change/"
            assert admin_client.get(change).status_code == 200, change
