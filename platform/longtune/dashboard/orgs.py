"""``/o/<slug>/...``: the org in the URL, resolved once per request through the session door.

``org_page`` resolves the membership with the same function the API's
``SessionOrgAuthentication`` uses (``session_membership``) and sets the same ``request.org``,
``request.role`` and ``request.scopes`` with the same ``attach_principal``. An org the user is
not a member of is a 404, exactly like one that does not exist. Writes (any unsafe method) need
the page's ``write`` permission from ``tenancy.roles.PERMISSION_MATRIX``: a viewer's forged POST
is a 403 even though the page never showed a button.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from rest_framework import exceptions

from longtune.tenancy.authentication import attach_principal, session_membership
from longtune.tenancy.roles import (
    PERMISSION_MATRIX,
    SAFE_METHODS,
    default_scopes_for_role,
    role_allows,
)

View = Callable[..., HttpResponse]


def resolve_org(request: HttpRequest, slug: str) -> None:
    """Set request.org/role/scopes/membership for ``slug``, or raise Http404."""
    try:
        membership = session_membership(request.user, slug)
    except (exceptions.NotFound, exceptions.AuthenticationFailed):
        raise Http404("No organization with this slug has you as a member.") from None
    attach_principal(
        request,
        org=membership.org,
        role=membership.role,
        scopes=default_scopes_for_role(membership.role),
        api_key=None,
    )
    request.membership = membership


def org_page(
    *, read: str = "resources.read", write: str = "resources.write"
) -> Callable[[View], View]:
    """Decorate a view taking ``(request, ...)`` under ``/o/<org_slug>/``."""
    for permission in (read, write):
        if permission not in PERMISSION_MATRIX:
            raise KeyError(f"unknown permission {permission!r}")

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, org_slug: str, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            resolve_org(request, org_slug)
            needed = read if request.method in SAFE_METHODS else write
            if not role_allows(request.role, needed):
                raise PermissionDenied(f"Role '{request.role}' does not have '{needed}'.")
            return view(request, *args, **kwargs)

        wrapper.dashboard_permissions = (read, write)  # type: ignore[attr-defined]
        return wrapper

    return decorate


def org_context(request: HttpRequest) -> dict[str, Any]:
    """Template context: the current org, role, what the role may do (``can.<permission>``
    with dots as underscores) and the user's orgs for the switcher."""
    org = getattr(request, "org", None)
    if org is None or getattr(request, "membership", None) is None:
        return {}
    return {
        "org": org,
        "role": request.role,
        "can": {
            name.replace(".", "_"): role_allows(request.role, name) for name in PERMISSION_MATRIX
        },
        "my_memberships": list(
            request.user.memberships.select_related("org").order_by("org__name")
        ),
        "billing_account": billing_account_of(org),
    }


def billing_account_of(org: Any) -> Any:
    """The org's billing account, for the past-due / suspended (402) banner; None if never set
    up (nothing is refused then)."""
    from longtune.billing.models import BillingAccount

    return BillingAccount.objects.for_org(org).filter(org=org).first()
