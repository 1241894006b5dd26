"""``Authorization: Bearer lt_...`` -> request.org, request.api_key, request.role.

One indexed lookup by the key's SHA-256 (see tenancy.tokens), joined with the org, its quota
override and the creator, so permission checks and throttling need no further queries.
"""

from __future__ import annotations

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from longtune.tenancy.models import ApiKey
from longtune.tenancy.tokens import API_KEY_PREFIX, hash_secret

MAX_KEY_LENGTH = 200


def _invalid(message: str = "Incorrect API key provided.") -> exceptions.AuthenticationFailed:
    return exceptions.AuthenticationFailed(message, code="invalid_api_key")


def _presented_key(request: Request) -> str | None:
    header = get_authorization_header(request)
    if not header:
        return None
    parts = header.split()
    if not parts or parts[0].lower() != b"bearer":
        return None  # another scheme: leave it to another authenticator (e.g. sessions later)
    if len(parts) != 2 or len(parts[1]) > MAX_KEY_LENGTH:
        raise _invalid("Malformed Authorization header; expected 'Bearer lt_...'.")
    try:
        token = parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise _invalid() from None
    if not token.startswith(API_KEY_PREFIX):
        raise _invalid()
    return token


def attach_principal(request: Request, key: ApiKey) -> None:
    """Expose the tenant context on the Django request (DRF's Request proxies to it)."""
    django_request = getattr(request, "_request", request)
    django_request.org = key.org
    django_request.api_key = key
    django_request.role = key.role


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
        attach_principal(request, key)
        return key.created_by, key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
