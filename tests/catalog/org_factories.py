"""Factories for the generated tenant-isolation and fuzz tests (tests/platform/)."""

from __future__ import annotations

from longtune.catalog.models import FineTunedModel
from tests.catalog.helpers import make_fine_tuned
from tests.org_factories import org_object_factory


@org_object_factory(FineTunedModel)
def make_fine_tuned_model(org):
    return make_fine_tuned(org)
