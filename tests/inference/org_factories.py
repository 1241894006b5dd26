"""Factories for the generated tenant-isolation and fuzz tests (tests/platform/)."""

from __future__ import annotations

from longtune.inference.models import Endpoint, UsageRecord
from tests.inference.helpers import make_endpoint, make_usage
from tests.org_factories import org_object_factory


@org_object_factory(Endpoint)
def make_stopped_endpoint(org):
    # Stopped: a fuzzed POST .../start may dispatch it, but only after commit, which the
    # non-transactional platform tests never reach.
    return make_endpoint(org, status="stopped")


@org_object_factory(UsageRecord)
def make_usage_record(org):
    return make_usage(make_endpoint(org, status="stopped"))
