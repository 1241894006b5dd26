"""``record(...)``: the one way code writes the audit log."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.http import HttpRequest

from longtune.tenancy.models import ApiKey, AuditAction, AuditLogEntry, Organization, User


def client_ip(request: HttpRequest | None) -> str | None:
    """REMOTE_ADDR. Behind a proxy, configure the proxy to set it (we do not trust X-Forwarded-For)."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def record(
    *,
    org: Organization,
    action: str,
    target: models.Model | None = None,
    actor_user: User | None = None,
    actor_api_key: ApiKey | None = None,
    request: HttpRequest | None = None,
    metadata: dict[str, Any] | None = None,
) -> AuditLogEntry:
    """Append one entry. Unless given explicitly, the actor is the request's API key and the
    user who created it (or the session user). ``action`` must be an ``AuditAction``: the
    OpenAPI enum of the audit log lists exactly those, so an unlisted action is refused here
    rather than returned to clients the schema does not describe."""
    if action not in AuditAction.values:
        raise ValueError(f"unknown audit action {action!r}: add it to AuditAction")
    if request is not None and actor_api_key is None:
        actor_api_key = getattr(request, "api_key", None)
    if actor_user is None and actor_api_key is not None:
        actor_user = actor_api_key.created_by
    if actor_user is None and request is not None:
        user = getattr(request, "user", None)
        actor_user = user if getattr(user, "is_authenticated", False) else None
    return AuditLogEntry.objects.create(
        org=org,
        action=action,
        target_type=target._meta.model_name if target is not None else "",
        target_id=getattr(target, "public_id", "") if target is not None else "",
        actor_user=actor_user,
        actor_api_key=actor_api_key,
        metadata=metadata or {},
        ip_address=client_ip(request),
    )
