"""The Django admin of org-owned models: staff see every organization, through the hatch.

Lives apart from ``tenancy.scoping`` because that module is imported while models load, and
``django.contrib.admin`` must not be.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import models

from longtune.tenancy.scoping import across_orgs, is_org_owned


class CrossOrgAdminMixin:
    """Shared by the admin classes (and inlines) of org-owned models: staff see every org.

    The changelist and change forms read through ``unscoped_across_orgs()``; foreign-key and
    many-to-many choices of org-owned models (and autocomplete, which asks the related
    admin's ``get_queryset``) too; the views run inside ``across_orgs()`` — and render inside
    it — for the validation and widgets Django runs on ``_default_manager``.
    """

    def get_queryset(self, request: Any) -> models.QuerySet:
        queryset = super().get_queryset(request)
        return queryset.unscoped_across_orgs() if is_org_owned(self.model) else queryset

    def _open_choices(self, db_field: Any, request: Any, kwargs: dict[str, Any]) -> None:
        if "queryset" in kwargs or not is_org_owned(db_field.remote_field.model):
            return
        queryset = self.get_field_queryset(kwargs.get("using"), db_field, request)
        if queryset is None:
            queryset = db_field.remote_field.model._default_manager.using(kwargs.get("using"))
        kwargs["queryset"] = queryset.unscoped_across_orgs()

    def formfield_for_foreignkey(self, db_field: Any, request: Any, **kwargs: Any) -> Any:
        self._open_choices(db_field, request, kwargs)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field: Any, request: Any, **kwargs: Any) -> Any:
        self._open_choices(db_field, request, kwargs)
        return super().formfield_for_manytomany(db_field, request, **kwargs)


class CrossOrgModelAdmin(CrossOrgAdminMixin, admin.ModelAdmin):
    """ModelAdmin for an org-owned model, or for one whose inlines are (Organization)."""

    def _across_orgs(self, view: Any, *args: Any, **kwargs: Any) -> Any:
        with across_orgs():
            response = view(*args, **kwargs)
            if callable(getattr(response, "render", None)):
                response.render()  # TemplateResponse renders lazily, after the view returns
            return response

    def changeform_view(self, *args: Any, **kwargs: Any) -> Any:
        return self._across_orgs(super().changeform_view, *args, **kwargs)

    def changelist_view(self, *args: Any, **kwargs: Any) -> Any:
        return self._across_orgs(super().changelist_view, *args, **kwargs)

    def delete_view(self, *args: Any, **kwargs: Any) -> Any:
        return self._across_orgs(super().delete_view, *args, **kwargs)

    def history_view(self, *args: Any, **kwargs: Any) -> Any:
        return self._across_orgs(super().history_view, *args, **kwargs)
