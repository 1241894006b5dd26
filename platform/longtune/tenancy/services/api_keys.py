"""Issuing and revoking API keys."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from longtune.tenancy import audit
from longtune.tenancy.models import ApiKey, AuditAction, Organization, User
from longtune.tenancy.roles import ROLE_RANK, default_scopes_for_role, role_at_least
from longtune.tenancy.services.errors import forbidden
from longtune.tenancy.tokens import generate_api_key


def check_grant(
    *, granted_role: str, granted_scopes: Iterable[str], by_role: str, by_scopes: Iterable[str]
) -> None:
    """Nobody hands out more than they hold."""
    if not role_at_least(by_role, granted_role):
        raise forbidden(
            "role_exceeds_creator",
            f"A '{by_role}' key cannot create a '{granted_role}' key.",
            "role",
        )
    missing = sorted(set(granted_scopes) - set(by_scopes))
    if missing:
        raise forbidden(
            "scope_exceeds_creator",
            f"This key lacks the scope(s) it tries to grant: {missing}.",
            "scopes",
        )


@transaction.atomic
def issue_api_key(
    *,
    org: Organization,
    created_by: User,
    role: str,
    scopes: Iterable[str] | None = None,
    name: str = "",
    expires_at: datetime | None = None,
    request: HttpRequest | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret (the only time the secret exists in clear)."""
    material = generate_api_key()
    key = ApiKey.objects.create(
        org=org,
        name=name,
        role=role,
        scopes=sorted(set(scopes if scopes is not None else default_scopes_for_role(role))),
        key_hash=material.digest,
        last_four=material.last_four,
        created_by=created_by,
        expires_at=expires_at,
    )
    audit.record(
        org=org,
        action=AuditAction.API_KEY_CREATED,
        target=key,
        request=request,
        actor_user=created_by,
        metadata={"name": name, "role": role, "scopes": key.scopes},
    )
    return key, material.secret


@transaction.atomic
def revoke_api_key(
    key: ApiKey, *, request: HttpRequest | None = None, reason: str = "revoked"
) -> ApiKey:
    """Idempotent: revoking a revoked key changes nothing and logs nothing."""
    locked = ApiKey.objects.for_org(key.org).select_for_update().get(pk=key.pk)
    if locked.revoked_at is None:
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])
        audit.record(
            org=locked.org,
            action=AuditAction.API_KEY_REVOKED,
            target=locked,
            request=request,
            metadata={"reason": reason},
        )
    return locked


def clamp_keys_to_role(*, org: Organization, user: User, role: str) -> int:
    """After a demotion, no key the user created may keep a higher role than theirs."""
    higher = [r for r, rank in ROLE_RANK.items() if rank > ROLE_RANK[role]]
    return ApiKey.objects.for_org(org).filter(created_by=user, role__in=higher).update(role=role)
