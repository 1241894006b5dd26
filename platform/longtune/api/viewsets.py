"""OrgScopedViewSet: the one door through which every /v1/ resource is read.

PostHog's ``safely_get_queryset`` pattern: the base class owns ``get_queryset`` and always
starts from ``Model.objects.for_org(request.org)``; a subclass may only narrow that queryset
in ``safely_get_queryset``. Defining ``get_queryset`` or ``queryset`` on a subclass is refused
at import time, so a view cannot forget the org filter. Objects are looked up by public id
(``/v1/things/{id}``), so another org's object is simply absent: 404, never 403.

A subclass declares::

    class FileViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
        model = File                       # has an OrgScopedManager and a PublicIdField
        serializer_class = FileSerializer
        required_permissions = {"create": "resources.write"}   # optional, see tenancy.roles
        required_scope = None              # or "inference" for inference endpoints

and registers a factory for ``File`` in ``tests/org_factories.py`` so the generated tenant
isolation test covers its routes.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.db import models
from rest_framework import exceptions
from rest_framework.viewsets import GenericViewSet

from longtune.api.ids import public_id_prefix, url_regex_for_prefix
from longtune.api.pagination import OpenAICursorPagination


class OrgScopedViewSet(GenericViewSet):
    model: ClassVar[type[models.Model] | None] = None
    lookup_field = "public_id"
    lookup_url_kwarg = "id"
    pagination_class = OpenAICursorPagination
    # Read by tenancy.permissions.HasOrgRole: action or HTTP method -> permission name.
    required_permissions: ClassVar[dict[str, str]] = {}
    # None: GET/HEAD/OPTIONS need scope "read", other methods "write".
    required_scope: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "get_queryset" in cls.__dict__ or cls.__dict__.get("queryset") is not None:
            raise ImproperlyConfigured(
                f"{cls.__name__}: narrow the org-scoped queryset in safely_get_queryset(); "
                "get_queryset/queryset are owned by OrgScopedViewSet."
            )
        model = cls.__dict__.get("model")
        if model is not None:
            if not hasattr(model.objects, "for_org"):
                raise ImproperlyConfigured(f"{model.__name__}.objects needs an OrgScopedManager")
            cls.lookup_value_regex = url_regex_for_prefix(public_id_prefix(model))

    def get_queryset(self) -> models.QuerySet:
        assert self.model is not None, f"{type(self).__name__} must declare `model`"
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular introspection
            return self.model.objects.none()
        org = getattr(self.request, "org", None)
        if org is None:
            raise exceptions.NotAuthenticated()
        return self.safely_get_queryset(self.model.objects.for_org(org))

    def safely_get_queryset(self, queryset: models.QuerySet) -> models.QuerySet:
        """Hook: narrow (filter, select_related, annotate) the already org-scoped queryset."""
        return queryset

    @classmethod
    def url_kwargs_for(cls, instance: models.Model) -> dict[str, str]:
        """URL kwargs addressing ``instance`` on this viewset's detail routes (isolation test)."""
        return {cls.lookup_url_kwarg: instance.public_id}
