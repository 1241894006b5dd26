"""Roles and THE permission matrix.

``PERMISSION_MATRIX`` is the single written source of truth: ``tenancy.permissions.HasOrgRole``
enforces it and ``render_permissions_markdown`` renders it into docs/permissions.md (a test
fails when the committed file drifts; regenerate with ``python manage.py write_permissions_doc``).
"""

from __future__ import annotations

from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


# Higher rank = more power. A key's role, an invitation's role and a role change may never
# exceed the rank of whoever grants it.
ROLE_RANK: dict[str, int] = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class Scope(models.TextChoices):
    READ = "read", "Read"
    WRITE = "write", "Write"
    INFERENCE = "inference", "Inference"


ALL_SCOPES: tuple[str, ...] = tuple(Scope.values)

# permission -> (roles holding it, what it covers)
PERMISSION_MATRIX: dict[str, tuple[frozenset[str], str]] = {
    "organization.read": (
        frozenset({Role.OWNER, Role.ADMIN, Role.MEMBER, Role.VIEWER}),
        "Read the organization, its effective quotas and usage.",
    ),
    "resources.read": (
        frozenset({Role.OWNER, Role.ADMIN, Role.MEMBER, Role.VIEWER}),
        "Read org resources: files, fine-tuning jobs, models, endpoints.",
    ),
    "resources.write": (
        frozenset({Role.OWNER, Role.ADMIN, Role.MEMBER}),
        "Create, change and delete org resources (upload files, start/cancel jobs, deploy).",
    ),
    "inference.invoke": (
        frozenset({Role.OWNER, Role.ADMIN, Role.MEMBER}),
        "Call inference endpoints (the key also needs scope `inference`).",
    ),
    "members.read": (
        frozenset({Role.OWNER, Role.ADMIN, Role.MEMBER, Role.VIEWER}),
        "List the organization's members and their roles.",
    ),
    "members.manage": (
        frozenset({Role.OWNER, Role.ADMIN}),
        "Change roles and remove members (admins cannot touch owners).",
    ),
    "owners.manage": (
        frozenset({Role.OWNER}),
        "Grant the owner role, change or remove an owner.",
    ),
    "api_keys.read": (frozenset({Role.OWNER, Role.ADMIN}), "List API keys (never their secrets)."),
    "api_keys.manage": (
        frozenset({Role.OWNER, Role.ADMIN}),
        "Create API keys (role and scopes at most the creator's) and revoke them.",
    ),
    "invitations.read": (frozenset({Role.OWNER, Role.ADMIN}), "List invitations."),
    "invitations.manage": (
        frozenset({Role.OWNER, Role.ADMIN}),
        "Invite people (role at most the inviter's) and revoke invitations.",
    ),
    "audit_log.read": (frozenset({Role.OWNER, Role.ADMIN}), "Read the audit log."),
    "pii_policy.manage": (
        frozenset({Role.OWNER, Role.ADMIN}),
        "Change the organization's PII scrubbing policy (entity types, allow-lists).",
    ),
    "evaluation_gate.manage": (
        frozenset({Role.OWNER, Role.ADMIN}),
        "Set the organization's eval gate (the passkey accuracy a fine-tuned model needs to "
        "be deployed).",
    ),
    "billing.manage": (frozenset({Role.OWNER}), "Change the plan and billing details."),
}

# Which key scope an HTTP method needs unless the view declares ``required_scope``.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def role_allows(role: str | None, permission: str) -> bool:
    if permission not in PERMISSION_MATRIX:
        raise KeyError(f"unknown permission {permission!r}: add it to PERMISSION_MATRIX")
    return role is not None and role in PERMISSION_MATRIX[permission][0]


def role_at_least(role: str, other: str) -> bool:
    return ROLE_RANK[role] >= ROLE_RANK[other]


def default_scopes_for_role(role: str) -> list[str]:
    """Least privilege for keys handed out automatically (a viewer's key only reads), and the
    scopes a session acting in an org holds."""
    return [Scope.READ.value] if role == Role.VIEWER else list(ALL_SCOPES)


def default_scope_for_method(method: str) -> str:
    return Scope.READ if method.upper() in SAFE_METHODS else Scope.WRITE


def render_permissions_markdown() -> str:
    roles = [Role.OWNER, Role.ADMIN, Role.MEMBER, Role.VIEWER]
    lines = [
        "# Permissions",
        "",
        "<!-- Generated from longtune.tenancy.roles.PERMISSION_MATRIX by",
        "     `python manage.py write_permissions_doc`. Do not edit by hand: a test compares. -->",
        "",
        "Every `/v1/` request is made with an API key. The key belongs to one organization and",
        "carries a role (at most its creator's) and scopes. A request is allowed when the key's",
        "role holds the permission the endpoint needs **and** the key has the scope the method",
        "needs: `read` for GET, `write` for POST/PATCH/PUT/DELETE, `inference` for inference",
        "endpoints.",
        "",
        "A logged-in user acting in an organization (the dashboard) holds their membership's role",
        "and every scope of that role (a viewer: `read` only).",
        "",
        "| permission | " + " | ".join(role.value for role in roles) + " | covers |",
        "|---|" + "---|" * len(roles) + "---|",
    ]
    for permission, (holders, covers) in PERMISSION_MATRIX.items():
        marks = " | ".join("yes" if role in holders else "—" for role in roles)
        lines.append(f"| `{permission}` | {marks} | {covers} |")
    lines += [
        "",
        "Rules on top of the matrix:",
        "",
        "- An organization always keeps at least one owner: the last owner cannot be demoted or removed.",
        "- Nobody grants more than they hold: a new key's role and scopes, an invitation's role and a",
        "  role change are capped by the caller's role (and scopes).",
        "- Removing a member revokes the API keys they created in that organization; demoting a",
        "  member lowers their keys' role to the new role.",
        "",
    ]
    return "\n".join(lines)
