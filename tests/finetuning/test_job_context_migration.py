"""finetuning 0004: the three context columns of a job become its one ``context`` spec, and
back (the original length comes from the job's base model)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from longtune.finetuning.models import FineTuningJob
from tests.finetuning.helpers import make_job

pytestmark = pytest.mark.django_db(transaction=True)
BEFORE = [("finetuning", "0003_dispatched_at_delete_orgfinetuningsettings")]


def _migrate(targets=None) -> None:
    """To ``targets``; None: every app's latest migration (what the rest of the suite needs,
    whatever later migrations depend on this one)."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets or executor.loader.graph.leaf_nodes())


def test_columns_become_one_spec_and_back(make_org):
    org = make_org("Migrate Context").org
    job = make_job(org)  # base original 64, target 256, yarn ×4
    spec = dict(job.context)
    try:
        _migrate(BEFORE)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT context_length, rope_method, rope_factor FROM finetuning_finetuningjob "
                "WHERE id = %s",
                [job.pk],
            )
            assert cursor.fetchone() == (256, "yarn", 4.0)
            cursor.execute(
                "UPDATE finetuning_finetuningjob SET rope_method = 'linear' WHERE id = %s",
                [job.pk],
            )
    finally:
        _migrate()
    assert FineTuningJob.objects.for_org(org).get(pk=job.pk).context == {
        **spec,
        "rope_method": "linear",
    }
