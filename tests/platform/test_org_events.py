"""Job events and endpoint events: one abstract model (longtune.events.OrgEvent), two tables.

Each case runs against both event logs through their own ``record_event``, so behaviour the
base provides cannot silently differ between fine-tuning and inference.
"""

from __future__ import annotations

import pytest

from longtune.events import MESSAGE_MAX_LENGTH, OrgEvent
from longtune.finetuning.events import record_event as record_job_event
from longtune.finetuning.models import JobEvent
from longtune.inference.events import record_event as record_endpoint_event
from longtune.inference.models import EndpointEvent
from tests.finetuning.helpers import make_job
from tests.inference.helpers import make_endpoint

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["job", "endpoint"])
def event_log(request, org_a):
    """(model, record(message, **kw), owner filter) for one event log of ``org_a``."""
    if request.param == "job":
        job = make_job(org_a.org)
        return JobEvent, lambda message, **kw: record_job_event(job, message, **kw), {"job": job}
    endpoint = make_endpoint(org_a.org)
    return (
        EndpointEvent,
        lambda message, **kw: record_endpoint_event(endpoint, message, **kw),
        {"endpoint": endpoint},
    )


def test_both_logs_are_org_events_with_their_own_owner_index():
    assert issubclass(JobEvent, OrgEvent) and issubclass(EndpointEvent, OrgEvent)
    assert JobEvent._meta.db_table == "finetuning_jobevent"
    assert EndpointEvent._meta.db_table == "inference_endpointevent"
    assert [i.fields for i in JobEvent._meta.indexes] == [["job", "id"]]
    assert [i.fields for i in EndpointEvent._meta.indexes] == [["endpoint", "id"]]


def test_overlong_messages_are_clipped_not_rejected(event_log):
    model, record, _ = event_log
    event = record("x" * (MESSAGE_MAX_LENGTH + 500), level="error", data={"n": 1})
    stored = model.objects.unscoped_across_orgs().get(pk=event.pk)
    assert stored.message == "x" * MESSAGE_MAX_LENGTH
    assert (stored.level, stored.data, str(stored)[:9]) == ("error", {"n": 1}, "[error] x")


def test_events_list_in_order_and_only_for_their_org(event_log, org_a, org_b):
    model, record, owner = event_log
    record("first")
    record("second", level="warn")
    mine = model.objects.for_org(org_a.org).filter(**owner)
    assert [(e.level, e.message) for e in mine] == [("info", "first"), ("warn", "second")]
    assert all(e.org_id == org_a.org.pk and e.created_at for e in mine)
    assert not model.objects.for_org(org_b.org).exists()
