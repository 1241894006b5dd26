"""Fail-closed org scoping: ``Model.objects.for_org(org)`` or nothing.

Every org-owned model's default manager is an ``OrgScopedManager``. Its querysets remember
whether they were scoped to one organization (``for_org(org)``) or explicitly opened across
all of them (``unscoped_across_orgs()``, a name meant to stand out in review and in
``git grep``). A query that is neither raises ``UnscopedQueryError`` the moment it would touch
the database, so a forgotten org filter is a loud error in tests, never another tenant's rows
in production. The flag survives chaining (``filter``, ``select_related``, ``values`` ...),
so the order of calls does not matter.

What needs no scope:
- ``create()`` / ``bulk_create()``: the new row's ``org`` says whose it is.
- ``none()``: an empty queryset reads nothing.
- related managers (``job.events.all()``, ``org.memberships.filter(...)``): they are filtered by
  the parent object, which was itself reached through a scoped query.
- Django internals that use ``_base_manager`` (FK descriptors, ``refresh_from_db``, the
  deletion collector, ``save()``): a plain manager, untouched.

Code that legitimately spans tenants — workers addressing a job by primary key, sweeps, the
Django admin — calls ``unscoped_across_orgs()``. For Django code we do not write ourselves
(unique/constraint validation in ``full_clean()``, the admin's raw-id widgets read
``_default_manager``), ``across_orgs()`` opens the same hatch for a block; its only users are
``OrgOwnedModelMixin`` (below) and ``tenancy.cross_org_admin`` (a test holds that line).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Self

from django.db import models

if TYPE_CHECKING:
    from longtune.tenancy.models import Organization

# The values of OrgScopedQuerySet._org_scope
SCOPED = "org"  # for_org(org)
ACROSS_ORGS = "across_orgs"  # unscoped_across_orgs()
THROUGH_PARENT = "through_parent"  # a related manager: job.events, org.memberships

# The names a caller may use on ``<OrgOwnedModel>.objects`` (tests/platform/test_scoping.py
# scans the code for anything else).
ALLOWED_MANAGER_CALLS = frozenset(
    {"for_org", "unscoped_across_orgs", "create", "bulk_create", "none"}
)

_across_orgs_block: ContextVar[bool] = ContextVar("longtune_across_orgs", default=False)


class UnscopedQueryError(RuntimeError):
    """A query on an org-owned model that is neither scoped to an org nor explicitly not."""


class OrgScopedQuerySet(models.QuerySet):
    org_field = "org"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._org_scope: str | None = None

    def _clone(self) -> Self:
        clone = super()._clone()
        clone._org_scope = self._org_scope
        return clone

    # -- the two ways out ------------------------------------------------------------------

    def for_org(self, org: Organization) -> Self:
        """This organization's rows only: what request code reads."""
        if org is None or getattr(org, "pk", None) is None:
            raise ValueError("for_org() needs a saved Organization, got None")
        scoped = self.filter(**{self.org_field: org})
        scoped._org_scope = SCOPED
        return scoped

    def unscoped_across_orgs(self) -> Self:
        """All rows of all organizations. Only for admin, workers and cross-tenant jobs."""
        opened = self._chain()
        opened._org_scope = ACROSS_ORGS
        return opened

    # -- the guard -------------------------------------------------------------------------

    @property
    def is_org_scoped(self) -> bool:
        """True once the queryset may read: scoped, explicitly unscoped, or empty."""
        return self._org_scope is not None or self.query.is_empty() or _across_orgs_block.get()

    def _require_scope(self, operation: str) -> None:
        if self.is_org_scoped:
            return
        name = self.model.__name__
        raise UnscopedQueryError(
            f"{name}.objects ... .{operation}() is not scoped to an organization; {name} is "
            f"org-owned, so its default manager refuses to read or write across tenants. Use "
            f"{name}.objects.for_org(org) for one organization's rows, or "
            f"{name}.objects.unscoped_across_orgs() where the code really spans organizations "
            f"(workers, sweeps, the admin)."
        )

    def _fetch_all(self) -> None:
        if self._result_cache is None:
            self._require_scope("evaluate")
        super()._fetch_all()

    def __repr__(self) -> str:
        if not self.is_org_scoped:  # repr would evaluate, and the guard would raise inside it
            return f"<{type(self).__name__} {self.model.__name__}: not scoped to an org>"
        return super().__repr__()

    def resolve_expression(self, *args: Any, **kwargs: Any) -> Any:
        """Used as a subquery (``filter(x__in=Other.objects.values("pk"))``)."""
        self._require_scope("subquery")
        return super().resolve_expression(*args, **kwargs)

    def count(self) -> int:
        self._require_scope("count")
        return super().count()

    def aggregate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self._require_scope("aggregate")
        return super().aggregate(*args, **kwargs)

    def exists(self) -> bool:
        self._require_scope("exists")
        return super().exists()

    def contains(self, obj: models.Model) -> bool:
        self._require_scope("contains")
        return super().contains(obj)

    def iterator(self, chunk_size: int | None = None) -> Iterator[Any]:
        self._require_scope("iterator")
        return super().iterator(chunk_size=chunk_size)

    def aiterator(self, chunk_size: int = 2000) -> Any:
        self._require_scope("aiterator")
        return super().aiterator(chunk_size=chunk_size)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        self._require_scope("get")
        return super().get(*args, **kwargs)

    def get_or_create(self, defaults: Any = None, **kwargs: Any) -> tuple[Any, bool]:
        self._require_scope("get_or_create")
        return super().get_or_create(defaults=defaults, **kwargs)

    def update_or_create(
        self, defaults: Any = None, create_defaults: Any = None, **kwargs: Any
    ) -> tuple[Any, bool]:
        self._require_scope("update_or_create")
        return super().update_or_create(
            defaults=defaults, create_defaults=create_defaults, **kwargs
        )

    def in_bulk(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        self._require_scope("in_bulk")
        return super().in_bulk(*args, **kwargs)

    def update(self, **kwargs: Any) -> int:
        self._require_scope("update")
        return super().update(**kwargs)

    def bulk_update(self, *args: Any, **kwargs: Any) -> int:
        self._require_scope("bulk_update")
        return super().bulk_update(*args, **kwargs)

    def delete(self) -> tuple[int, dict[str, int]]:
        self._require_scope("delete")
        return super().delete()

    def explain(self, **options: Any) -> str:
        self._require_scope("explain")
        return super().explain(**options)


class OrgScopedManager(models.Manager.from_queryset(OrgScopedQuerySet)):
    """The default manager of every org-owned model (``org_scoped_manager`` for extra methods)."""

    def get_queryset(self) -> OrgScopedQuerySet:
        queryset = super().get_queryset()
        # Related managers (job.events, org.memberships) subclass this class and carry the
        # parent in ``instance``; their queryset is filtered by that parent.
        if getattr(self, "instance", None) is not None:
            queryset._org_scope = THROUGH_PARENT
        return queryset


def org_scoped_manager(queryset_class: type[OrgScopedQuerySet]) -> OrgScopedManager:
    """``objects = org_scoped_manager(JobQuerySet)``: the guarded manager plus the model's own
    queryset methods (``active()``, ``live()``), in one declaration."""
    if not issubclass(queryset_class, OrgScopedQuerySet):
        raise TypeError(f"{queryset_class.__name__} must subclass OrgScopedQuerySet")
    return OrgScopedManager.from_queryset(queryset_class)()


def is_org_owned(model: type[models.Model]) -> bool:
    return isinstance(model._default_manager, OrgScopedManager)


class OrgOwnedModelMixin:
    """First base of every org-owned model (``class File(OrgOwnedModelMixin, models.Model)``).

    ``full_clean()`` (admin forms, ``ModelForm``) checks unique fields and constraints with
    ``_default_manager...exists()``: a question about every org's rows (a fine-tuned model's
    name is unique across orgs), answered with a boolean, never with rows. Those two checks
    run through the hatch; nothing else does.
    """

    def validate_unique(self, exclude: Any = None) -> None:
        with across_orgs():
            super().validate_unique(exclude=exclude)

    def validate_constraints(self, exclude: Any = None) -> None:
        with across_orgs():
            super().validate_constraints(exclude=exclude)


@contextmanager
def across_orgs() -> Iterator[None]:
    """The escape hatch as a block, for Django code that reads ``_default_manager`` itself
    (unique and constraint validation, the admin's raw-id widgets). Our own code calls
    ``unscoped_across_orgs()`` on the queryset instead."""
    token = _across_orgs_block.set(True)
    try:
        yield
    finally:
        _across_orgs_block.reset(token)
