"""HasOrgRole: the principal's scope for the method AND its role's permission for the action.

The principal is whatever the authenticator attached (``tenancy.authentication``): an API key
(its scopes and role) or a session user acting in an org (its membership's role and every
scope of that role). The permission reads ``request.org``/``role``/``scopes`` only.

A view declares what it needs (both optional):
- ``required_permissions = {"list": "members.read", "partial_update": "members.manage"}``
  keyed by viewset action or HTTP method; default "resources.read" for GET/HEAD/OPTIONS,
  "resources.write" otherwise. Names are keys of ``tenancy.roles.PERMISSION_MATRIX``.
- ``required_scope = "inference"`` for inference endpoints; default "read" for safe methods,
  "write" otherwise.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from longtune.tenancy.roles import SAFE_METHODS, default_scope_for_method, role_allows


def required_scope(request: Request, view: Any) -> str:
    return getattr(view, "required_scope", None) or default_scope_for_method(request.method)


def required_permission(request: Request, view: Any) -> str:
    declared: dict[str, str] = getattr(view, "required_permissions", {}) or {}
    action = getattr(view, "action", None)
    if action and action in declared:
        return declared[action]
    if request.method in declared:
        return declared[request.method]
    return "resources.read" if request.method in SAFE_METHODS else "resources.write"


class HasOrgRole(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        if getattr(request, "org", None) is None:  # no authenticator resolved an org
            raise exceptions.NotAuthenticated()
        scope = required_scope(request, view)
        if scope not in request.scopes:
            holder = "This API key" if request.api_key is not None else "This session"
            raise exceptions.PermissionDenied(
                f"{holder} lacks the '{scope}' scope needed for {request.method} {request.path}.",
                code="insufficient_scope",
            )
        permission = required_permission(request, view)
        if not role_allows(request.role, permission):
            raise exceptions.PermissionDenied(
                f"Role '{request.role}' does not have permission '{permission}'.",
                code="insufficient_role",
            )
        return True
