"""Org scoping for querysets: ``Model.objects.for_org(org)``.

Every org-owned model uses ``OrgScopedManager``. Request-handling code reads through
``for_org`` (OrgScopedViewSet does it for you). Code that legitimately spans tenants — the
Django admin, workers picking up a job by primary key, billing sweeps — calls
``unscoped_across_orgs()``, a name meant to stand out in review and in ``git grep``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from django.db import models

if TYPE_CHECKING:
    from longtune.tenancy.models import Organization


class OrgScopedQuerySet(models.QuerySet):
    org_field = "org"

    def for_org(self, org: Organization) -> Self:
        if org is None or getattr(org, "pk", None) is None:
            raise ValueError("for_org() needs a saved Organization, got None")
        return self.filter(**{self.org_field: org})

    def unscoped_across_orgs(self) -> Self:
        """All rows of all organizations. Only for admin, workers and cross-tenant jobs."""
        return self.all()


class OrgScopedManager(models.Manager.from_queryset(OrgScopedQuerySet)):
    pass
