"""The data migration: every ``OrgFinetuningSettings.dedicated_queue`` becomes an active
training ``DedicatedCapacity`` on the same queue, and routing then uses it."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("compute", "0001_dedicatedcapacity"), ("finetuning", "0001_initial")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_dedicated_queues_are_carried_over(make_org):
    from longtune.compute.queues import training_queue_for

    routed, unset = make_org("Routed"), make_org("Unset")
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    try:
        old = migrate(BEFORE)
        settings_model = old.get_model("finetuning", "OrgFinetuningSettings")
        settings_model.objects.create(
            org_id=routed.org.pk, dedicated_queue=f"gpu.{routed.org.slug}"
        )
        settings_model.objects.create(org_id=unset.org.pk, dedicated_queue=None)
        new = migrate(latest)
    finally:
        migrate(latest)
    capacity = new.get_model("compute", "DedicatedCapacity")
    rows = list(capacity.objects.values_list("org_id", "hosts", "queue", "active"))
    assert rows == [(routed.org.pk, "training", f"gpu.{routed.org.slug}", True)]
    assert training_queue_for(routed.org) == f"gpu.{routed.org.slug}"
    assert training_queue_for(unset.org) == "gpu"
