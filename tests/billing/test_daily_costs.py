"""The billing page's chart data: this period's usage cost per UTC day, from the same ledgers and
price table as the period's bill, at a bounded number of queries whatever the row count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from longtune.billing.accounts import account_for
from longtune.billing.usage import daily_costs, period_summary
from longtune.inference.models import UsageRecord
from tests.inference.helpers import make_endpoint, make_usage

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 30, 18, 0, tzinfo=UTC)  # the last day of a 30-day period


def usage_on(endpoint, day: int, prompt: int) -> None:
    row = make_usage(endpoint, prompt=prompt, completion=0)
    UsageRecord.objects.for_org(endpoint.org).filter(pk=row.pk).update(
        created_at=datetime(2026, 11, day, 9, 30, tzinfo=UTC)
    )


def test_one_point_per_day_up_to_now_adding_up_to_the_bill(org_a, org_b):
    endpoint = make_endpoint(org_a.org, status="ready")
    for day in (1, 1, 15, 30):
        usage_on(endpoint, day, prompt=1_000_000)  # free plan: $0.30 each
    usage_on(make_endpoint(org_b.org, status="ready"), 15, prompt=9_000_000)  # not org A's
    days = daily_costs(org_a.org, now=NOW)
    assert [d.day.day for d in days] == list(range(1, 31))
    by_day = {d.day.day: d.usage_cost for d in days}
    assert (by_day[1], by_day[15], by_day[30], by_day[2]) == (
        Decimal("0.60"),
        Decimal("0.30"),
        Decimal("0.30"),
        Decimal("0"),
    )
    summary = period_summary(org_a.org, account_for(org_a.org), now=NOW)
    assert sum(by_day.values()) == summary.cost.usage_total == Decimal("1.20")


def test_the_query_count_does_not_grow_with_the_rows(org_a, django_assert_max_num_queries):
    endpoint = make_endpoint(org_a.org, status="ready")
    for index in range(60):
        usage_on(endpoint, 1 + index % 30, prompt=1000)
    # Per day: one query per token ledger, one for instance minutes, one for their amounts.
    with django_assert_max_num_queries(30 * 4):
        days = daily_costs(org_a.org, now=NOW)
    assert len(days) == 30
    assert daily_costs(org_a.org, now=NOW - timedelta(days=29))[-1].day.day == 1


def test_instance_minutes_are_charted_at_the_contract_price(org_a):
    from tests.billing.test_instance_meter import end_instance, ready_instance

    start = datetime(2026, 11, 10, 9, 30, tzinfo=UTC)
    end_instance(ready_instance(org_a.org, start), start + timedelta(minutes=90))  # $12.50/h
    by_day = {d.day.day: d.usage_cost for d in daily_costs(org_a.org, now=NOW)}
    assert by_day[10] == Decimal("18.75") and by_day[11] == Decimal("0")
    summary = period_summary(org_a.org, account_for(org_a.org), now=NOW)
    assert summary.cost.usage_total == sum(by_day.values())
