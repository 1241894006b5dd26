"""Who is calling, and in which organization: resolved once per request, here.

Two doors, one result. Both end in ``attach_principal``, which sets ``request.org``,
``request.role``, ``request.scopes`` and ``request.api_key`` (None for a session); views,
permissions (``HasOrgRole``), throttling and the audit log read only those.

- ``ApiKeyAuthentication``: ``Authorization: Bearer lt_...``. One indexed lookup by the key's
  SHA-256 (see tenancy.tokens), joined with the org, its quota override and the creator, so
  permission checks and throttling need no further queries. The key decides the org.
- ``SessionOrgAuthentication``: a logged-in user (the dashboard) acting in one of their orgs.
  The org comes from the URL kwarg ``org_slug`` (dashboard routes ``/o/<slug>/...``), else the
  ``LongTune-Organization: <slug>`` header, else the user's only org; the membership decides
  the role, and a session holds every scope of that role. An org the user is not a member of
  is "not found" — the same answer as an org that does not exist. CSRF is enforced like DRF's
  ``SessionAuthentication`` (it is one).
"""

from __future__ import annotations

from collections.abc import Sequence

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import (
    BaseAuthentication,
    SessionAuthentication,
    get_authorization_header,
)
from rest_framework.request import Request

from longtune.tenancy.models import ApiKey, Membership, Organization, User
from longtune.tenancy.roles import default_scopes_for_role
from longtune.tenancy.tokens import API_KEY_PREFIX, hash_secret

ORG_HEADER = "LongTune-Organization"
ORG_URL_KWARG = "org_slug"

MAX_KEY_LENGTH = 200


def _invalid(message: str = "Incorrect API key provided.") -> exceptions.AuthenticationFailed:
    return exceptions.AuthenticationFailed(message, code="invalid_api_key")


def _presented_key(request: Request) -> str | None:
    header = get_authorization_header(request)
    if not header:
        return None
    parts = header.split()
    if not parts or parts[0].lower() != b"bearer":
        return None  # another scheme: leave it to another authenticator
    if len(parts) != 2 or len(parts[1]) > MAX_KEY_LENGTH:
        raise _invalid("Malformed Authorization header; expected 'Bearer lt_...'.")
    try:
        token = parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise _invalid() from None
    if not token.startswith(API_KEY_PREFIX):
        raise _invalid()
    return token


def attach_principal(
    request: Request,
    *,
    org: Organization,
    role: str,
    scopes: Sequence[str],
    api_key: ApiKey | None = None,
) -> None:
    """Expose the tenant context on the Django request (DRF's Request proxies to it): the one
    place either door sets it, so an API key and a session look the same to everything after."""
    django_request = getattr(request, "_request", request)
    django_request.org = org
    django_request.role = role
    django_request.scopes = tuple(scopes)
    django_request.api_key = api_key


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[object, ApiKey] | None:
        token = _presented_key(request)
        if token is None:
            return None
        key = (
            ApiKey.objects.unscoped_across_orgs()  # the key itself decides the org
            .select_related("org", "org__quota", "created_by")
            .filter(key_hash=hash_secret(token))
            .first()
        )
        if key is None:
            raise _invalid()
        now = timezone.now()
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed(
                "This API key has been revoked.", code="api_key_revoked"
            )
        if key.is_expired(now):
            raise exceptions.AuthenticationFailed(
                "This API key has expired.", code="api_key_expired"
            )
        if not key.created_by.is_active:
            raise _invalid("The user who created this API key is deactivated.")
        key.touch_last_used(now)
        attach_principal(request, org=key.org, role=key.role, scopes=key.scopes, api_key=key)
        return key.created_by, key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


def _org_not_found() -> exceptions.NotFound:
    # One answer for "no such org" and "not your org": a session cannot probe for slugs.
    return exceptions.NotFound(
        "No organization with this slug has you as a member.", code="organization_not_found"
    )


def requested_org_slug(request: Request) -> str | None:
    """The org a session asks for: URL kwarg ``org_slug``, else the ``LongTune-Organization``
    header, else None (the user's only org)."""
    kwargs = (getattr(request, "parser_context", None) or {}).get("kwargs") or {}
    return kwargs.get(ORG_URL_KWARG) or request.headers.get(ORG_HEADER) or None


def session_membership(user: User, slug: str | None) -> Membership:
    """The membership a session acts through (org and quota joined, like an API key's)."""
    memberships = user.memberships.select_related("org", "org__quota")  # the user's own
    if slug is not None:
        membership = memberships.filter(org__slug=slug).first()
        if membership is None:
            raise _org_not_found()
        return membership
    mine = list(memberships[:2])
    if not mine:
        raise exceptions.AuthenticationFailed(
            "You are not a member of any organization.", code="no_organization"
        )
    if len(mine) > 1:
        raise exceptions.AuthenticationFailed(
            f"You are a member of several organizations: name one in the {ORG_HEADER} header.",
            code="organization_required",
        )
    return mine[0]


class SessionOrgAuthentication(SessionAuthentication):
    def authenticate(self, request: Request) -> tuple[User, None] | None:
        authenticated = super().authenticate(request)  # None without a session; CSRF checked
        if authenticated is None:
            return None
        user = authenticated[0]
        membership = session_membership(user, requested_org_slug(request))
        attach_principal(
            request,
            org=membership.org,
            role=membership.role,
            scopes=default_scopes_for_role(membership.role),
            api_key=None,
        )
        return user, None
