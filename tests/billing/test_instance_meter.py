"""Dedicated-instance time as a meter source: only closed hours are metered, in whole minutes,
once each (identifier = the hour row's natural key); each hour is priced at its contract's
hourly price, or the plan's table rate where the contract set none. Against the fake Stripe."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from longtune.billing import outbox, prices
from longtune.billing.models import MeterEvent
from longtune.billing.reconcile import reconcile
from longtune.billing.sources import MIN_METERED_HOURS, instance_minutes
from longtune.billing.usage import ledger_usage, period_cost_of, sent_usage
from longtune.provisioning import services
from longtune.provisioning.models import DedicatedInstance, InstanceState, InstanceUsage
from longtune.provisioning.usage import record_usage
from tests.provisioning.helpers import book

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)


@pytest.fixture
def base():
    """10:00 UTC two days ago: the test's hours lie inside one day (and one month's period
    is not assumed: windows are explicit)."""
    return (timezone.now() - timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)


def ready_instance(org, ready_at, *, hourly_price="12.50", **fields) -> DedicatedInstance:
    instance = book(org, hourly_price=hourly_price, **fields)
    services.provision(instance, staff=None)
    services.transition(instance, InstanceState.READY)
    DedicatedInstance.objects.unscoped_across_orgs().filter(pk=instance.pk).update(
        ready_at=ready_at
    )
    return DedicatedInstance.objects.unscoped_across_orgs().get(pk=instance.pk)


def end_instance(instance, at) -> DedicatedInstance:
    DedicatedInstance.objects.unscoped_across_orgs().filter(pk=instance.pk).update(
        decommissioned_at=at
    )
    instance.refresh_from_db()
    record_usage(instance)
    return instance


def sent_events(fake) -> dict[str, int]:
    return {
        e["identifier"]: int(e["payload"]["value"])
        for e in fake.state()["meter_events"]
        if e["event_name"] == "longtune_instance_minutes"
    }


def test_minutes_round_half_up():
    assert instance_minutes(Decimal("0.500000")) == 30
    assert instance_minutes(Decimal("1.000000")) == 60
    assert instance_minutes(Decimal("0.008333")) == 0  # 29.99 s
    assert instance_minutes(MIN_METERED_HOURS) == 1  # 30.0 s: the shortest row collected


def test_a_row_under_half_a_minute_is_never_collected(billing_on, org_a, base):
    instance = ready_instance(org_a.org, base + HOUR - timedelta(seconds=20))
    end_instance(instance, base + HOUR)  # 20 s, closed
    assert InstanceUsage.objects.for_org(org_a.org).get().closed
    assert outbox.collect() == 0
    assert not MeterEvent.objects.for_org(org_a.org).exists()


def test_record_usage_closes_an_hour_only_when_it_is_final(org_a, base):
    instance = ready_instance(org_a.org, base + timedelta(minutes=30))
    record_usage(instance, now=base + 2 * HOUR + timedelta(minutes=10))
    rows = list(InstanceUsage.objects.for_org(org_a.org).order_by("hour_start"))
    assert [(str(r.hours), r.closed) for r in rows] == [
        ("0.500000", True),  # from ready_at to the hour's end
        ("1.000000", True),
        ("0.166667", False),  # still running
    ]
    end_instance(instance, base + 2 * HOUR + timedelta(minutes=15))
    last = InstanceUsage.objects.for_org(org_a.org).order_by("hour_start").last()
    assert (str(last.hours), last.closed) == ("0.250000", True)  # ended inside its hour


def test_only_closed_hours_are_metered_once_each_and_reconcile(billing_on, org_a, org_b, base):
    instance = ready_instance(org_a.org, base + timedelta(minutes=30))
    record_usage(instance, now=base + 2 * HOUR + timedelta(minutes=10))
    assert outbox.collect() == 2  # the running hour waits
    assert outbox.send_pending().sent == 2
    key = f"{instance.public_id}.{base:%Y%m%dT%H}:instance_minutes"
    later = f"{instance.public_id}.{base + HOUR:%Y%m%dT%H}:instance_minutes"
    assert sent_events(billing_on) == {key: 30, later: 60}

    # Rewriting a metered (closed) hour changes nothing in the outbox; the last hour closes.
    record_usage(instance, now=base + 2 * HOUR + timedelta(minutes=12))
    assert outbox.collect() == 0
    end_instance(instance, base + 2 * HOUR + timedelta(minutes=15))
    assert outbox.collect() == 1 and outbox.send_pending().sent == 1
    assert outbox.collect() == 0 and outbox.send_pending().sent == 0
    last = f"{instance.public_id}.{base + 2 * HOUR:%Y%m%dT%H}:instance_minutes"
    assert sent_events(billing_on) == {key: 30, later: 60, last: 15}
    assert billing_on.state()["duplicate_meter_events"] == 0
    event = MeterEvent.objects.for_org(org_a.org).get(identifier=last)
    assert event.timestamp == base + 2 * HOUR and event.meter == prices.INSTANCE_MINUTES

    # Reconciliation: the ledger's minutes equal what Stripe was sent, per org and window.
    window = (base, base + 3 * HOUR)
    assert ledger_usage(org_a.org, *window)[prices.INSTANCE_MINUTES] == 105
    assert sent_usage(org_a.org, *window)[prices.INSTANCE_MINUTES] == 105
    assert ledger_usage(org_b.org, *window)[prices.INSTANCE_MINUTES] == 0
    rows = [r for r in reconcile([org_a.org], at=base) if r.meter == prices.INSTANCE_MINUTES]
    assert [(r.ledger, r.sent, r.pending, r.missing) for r in rows] == [(105, 105, 0, 0)]


def test_the_contract_price_beats_the_table_rate(org_a, base):
    """105 min at the contract's $12.50/h and 60 min of an instance with no contract price at
    the free plan's $3.50/h: $21.875 + $3.50; the line's unit price is the average charged."""
    contract = ready_instance(org_a.org, base + timedelta(minutes=30))
    end_instance(contract, base + 2 * HOUR + timedelta(minutes=15))
    window = (base, base + 3 * HOUR)
    usage, cost = period_cost_of(org_a.org, *window)
    line = {line.meter: line for line in cost.lines}[prices.INSTANCE_MINUTES]
    assert (usage[prices.INSTANCE_MINUTES], line.amount, line.unit_price) == (
        105,
        Decimal("21.88"),
        Decimal("12.50"),
    )
    assert line.unit == "dedicated-instance hour"

    untariffed = ready_instance(org_a.org, base, hourly_price="0", hosts="serving")
    end_instance(untariffed, base + HOUR)
    usage, cost = period_cost_of(org_a.org, *window)
    line = {line.meter: line for line in cost.lines}[prices.INSTANCE_MINUTES]
    assert usage[prices.INSTANCE_MINUTES] == 165
    assert line.amount == Decimal("25.38")  # 21.875 + 3.50 = 25.375
    assert line.unit_price == Decimal("9.23")  # 25.375 / 165 min * 60
    assert cost.usage_total == Decimal("25.38")
