"""Builders for the dedicated-instance tests."""

from __future__ import annotations

import datetime

from longtune.provisioning import services
from longtune.tenancy.models import User


def staff_user(email: str = "sales@longtune.example", *, sales: bool = True, superuser=False):
    from django.contrib.auth.models import Group

    from longtune.provisioning.sales import SALES_GROUP, ensure_sales_group

    user = User.objects.filter(email=email).first() or User.objects.create_user(
        email=email, password="correct horse battery staple 42"
    )
    user.is_staff = True
    user.is_superuser = superuser
    user.save()
    if sales:
        ensure_sales_group()
        user.groups.add(Group.objects.get(name=SALES_GROUP))
    return user


def book(org, staff=None, **fields):
    defaults = {
        "accelerator_type": "cpu",
        "pool": "local",
        "contract_start": datetime.date(2026, 12, 1),
        "contract_end": datetime.date(2027, 12, 1),
        "hourly_price": "12.50",
    }
    return services.request_instance(org=org, staff=staff, **{**defaults, **fields})
