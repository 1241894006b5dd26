"""OrgScopedViewSet: the one door through which every /v1/ resource is read.

PostHog's ``routing.py`` pattern (``protected_methods``): the base class owns the four methods
that decide *who* is calling and *what* they may see, and refuses, when the subclass is
created, any subclass that overrides one of them (or sets the attribute behind it):

- ``get_queryset`` always starts from ``Model.objects.for_org(request.org)``; a subclass
  narrows it in ``safely_get_queryset``.
- ``get_object`` looks up by public id in that queryset; a subclass may change the lookup in
  ``safely_get_object``. Another org's object is simply absent: 404, never 403.
- ``get_permissions`` is ``HasOrgRole`` (the settings' default); a subclass declares
  ``required_permissions`` / ``required_scope``.
- ``get_authenticators`` are the settings' API-key and session doors, which resolve
  ``request.org`` once (tenancy.authentication).

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
from rest_framework.authentication import BaseAuthentication
from rest_framework.generics import get_object_or_404
from rest_framework.permissions import BasePermission
from rest_framework.viewsets import GenericViewSet

from longtune.api.ids import public_id_prefix, url_regex_for_prefix
from longtune.api.pagination import OpenAICursorPagination

# name on a subclass -> why it is refused and what to do instead
PROTECTED_ATTRIBUTES: dict[str, str] = {
    "get_queryset": "it is what scopes every query to request.org; narrow the org-scoped "
    "queryset in safely_get_queryset() instead",
    "queryset": "a class-level queryset is not scoped to the caller's org; declare `model` "
    "and narrow in safely_get_queryset()",
    "get_object": "it looks objects up inside the org-scoped queryset; change the lookup in "
    "safely_get_object() instead",
    "get_permissions": "every /v1/ view is checked by HasOrgRole; declare "
    "required_permissions / required_scope instead",
    "permission_classes": "every /v1/ view is checked by HasOrgRole; declare "
    "required_permissions / required_scope instead",
    "get_authenticators": "the authenticators resolve request.org once (API key or session "
    "membership); there is no other door",
    "authentication_classes": "the authenticators resolve request.org once (API key or "
    "session membership); there is no other door",
}


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
        # Every class between the subclass and OrgScopedViewSet in the MRO, so a mixin listed
        # before OrgScopedViewSet cannot smuggle an override in either.
        below = cls.__mro__[: cls.__mro__.index(OrgScopedViewSet)]
        for name, reason in PROTECTED_ATTRIBUTES.items():
            if any(name in klass.__dict__ for klass in below):
                raise ImproperlyConfigured(
                    f"{cls.__name__}.{name} is protected on OrgScopedViewSet and must not be "
                    f"overridden: {reason}."
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

    def get_object(self) -> models.Model:
        obj = self.safely_get_object(self.filter_queryset(self.get_queryset()))
        self.check_object_permissions(self.request, obj)
        return obj

    def safely_get_object(self, queryset: models.QuerySet) -> models.Model:
        """Hook: find the object in the org-scoped queryset (default: ``lookup_field`` from the
        URL); 404 when it is not there."""
        value = self.kwargs[self.lookup_url_kwarg or self.lookup_field]
        return get_object_or_404(queryset, **{self.lookup_field: value})

    def get_permissions(self) -> list[BasePermission]:
        return super().get_permissions()

    def get_authenticators(self) -> list[BaseAuthentication]:
        return super().get_authenticators()

    @classmethod
    def url_kwargs_for(cls, instance: models.Model) -> dict[str, str]:
        """URL kwargs addressing ``instance`` on this viewset's detail routes (isolation test)."""
        return {cls.lookup_url_kwarg: instance.public_id}
