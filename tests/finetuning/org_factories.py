"""Factories for the generated tenant-isolation and fuzz tests (tests/platform/)."""

from __future__ import annotations

from longtune.finetuning.models import FineTuningJob
from tests.finetuning.helpers import make_job
from tests.org_factories import org_object_factory


@org_object_factory(FineTuningJob)
def make_running_job(org):
    return make_job(org)
