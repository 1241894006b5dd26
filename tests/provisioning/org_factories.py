"""Factory for the generated tenant-isolation and fuzz tests (tests/platform/): rows straight
in the DB, so it does not depend on the pools' inventory of the test's settings."""

from __future__ import annotations

import datetime

from longtune.compute.models import DedicatedCapacity
from longtune.provisioning.models import DedicatedInstance
from tests.org_factories import org_object_factory


@org_object_factory(DedicatedInstance)
def make_dedicated_instance(org):
    count = DedicatedCapacity.objects.unscoped_across_orgs().count()
    capacity = DedicatedCapacity.objects.create(
        org=org, hosts="training", queue=f"gpu.{org.slug}.f{count}", active=False
    )
    return DedicatedInstance.objects.create(
        org=org,
        capacity=capacity,
        accelerator_type="h100_80gb",
        pool="factory",
        contract_start=datetime.date(2026, 12, 1),
        contract_end=datetime.date(2027, 12, 1),
    )
