"""The "Sales" staff group: exactly the permissions to manage dedicated instances and their
contracts, and to see the pools' capacity — nothing of the customers' data (no files,
datasets, jobs' contents, API keys or members).

Kept in step after every migrate (post_migrate, so the permissions exist) and by
``manage.py ensure_sales_group``; a permission added here is granted on the next migrate,
one removed here is revoked.
"""

from __future__ import annotations

from typing import Any

SALES_GROUP = "Sales"
SALES_PERMISSIONS = (
    ("provisioning", "view_dedicatedinstance"),
    ("provisioning", "add_dedicatedinstance"),
    ("provisioning", "provision_dedicatedinstance"),
    ("provisioning", "resize_dedicatedinstance"),
    ("provisioning", "drain_dedicatedinstance"),
    ("provisioning", "decommission_dedicatedinstance"),
    ("provisioning", "extend_contract_dedicatedinstance"),
    ("provisioning", "view_capacity"),
    ("provisioning", "view_instanceevent"),
    ("provisioning", "view_instanceusage"),
    ("compute", "view_dedicatedcapacity"),
)


def ensure_sales_group() -> Any:
    """Create/refresh the group; returns it."""
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.get_or_create(name=SALES_GROUP)
    wanted = []
    for app_label, codename in SALES_PERMISSIONS:
        wanted.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    group.permissions.set(wanted)
    return group


def ensure_sales_group_after_migrate(sender: Any = None, **kwargs: Any) -> None:
    from django.contrib.auth.models import Permission

    if not Permission.objects.filter(content_type__app_label="provisioning").exists():
        return  # a migrate that stopped before this app (migration tests)
    ensure_sales_group()
