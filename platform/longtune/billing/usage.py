"""The current period's usage and cost, from the ledgers (Stripe on or off), and the budget.

The period is the calendar month (UTC), the same window the monthly quotas count. Cost is the
price table's (``prices.period_cost``) for the org's plan, less granted credits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

from longtune.billing import prices
from longtune.billing.models import BillingAccount, MeterEvent
from longtune.billing.sources import MeterSource, meter_sources
from longtune.tenancy.models import Organization


def period_bounds(now: datetime | None = None) -> tuple[datetime, datetime]:
    now = now or timezone.now()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def ledger_usage(org: Organization, start: datetime, end: datetime) -> dict[str, int]:
    """Raw units per meter in [start, end), summed over every registered source."""
    usage = {meter: 0 for meter in prices.METERS}
    for source in meter_sources():
        for meter, value in source.usage(org, start, end).items():
            usage[meter] += int(value)
    return usage


def ledger_amounts(org: Organization, start: datetime, end: datetime) -> dict[str, Decimal]:
    """Unrounded dollars per meter from the sources that price their own rows (contract
    prices of dedicated instances); the other meters are priced by the plan's table."""
    amounts: dict[str, Decimal] = {}
    for source in meter_sources():
        if source.amounts is not None:
            for meter, amount in source.amounts(org, start, end).items():
                amounts[meter] = amounts.get(meter, Decimal("0")) + amount
    return amounts


def period_cost_of(
    org: Organization, start: datetime, end: datetime
) -> tuple[dict[str, int], prices.Cost]:
    """(usage per meter, its ``prices.Cost``) of [start, end) for the org's plan."""
    usage = ledger_usage(org, start, end)
    return usage, prices.period_cost(org.plan, usage, ledger_amounts(org, start, end))


def sent_usage(org: Organization, start: datetime, end: datetime) -> dict[str, int]:
    """What the outbox has reported to Stripe for the same window and Stripe did not reject
    afterwards (reconciliation)."""
    rows = (
        MeterEvent.objects.for_org(org)
        .filter(sent_at__isnull=False, stripe_error="", timestamp__gte=start, timestamp__lt=end)
        .values("meter")
        .annotate(total=Sum("value"))
    )
    usage = {meter: 0 for meter in prices.METERS}
    for row in rows:
        usage[row["meter"]] = int(row["total"])
    return usage


@dataclass(frozen=True)
class PeriodSummary:
    start: datetime
    end: datetime
    usage: dict[str, int]
    cost: prices.Cost
    credit: Decimal
    budget: Decimal | None

    @property
    def amount_due(self) -> Decimal:
        return max(self.cost.total - self.credit, Decimal("0"))

    @property
    def budget_used_percent(self) -> int | None:
        """Of the budget, how much the usage-based charges (not the fixed fee) have used."""
        if not self.budget:
            return None
        return int(self.cost.usage_total * 100 / self.budget)


def cents_to_dollars(cents: int | None) -> Decimal | None:
    return None if cents is None else Decimal(cents) / 100


def period_summary(
    org: Organization, account: BillingAccount, now: datetime | None = None
) -> PeriodSummary:
    start, end = period_bounds(now)
    usage, cost = period_cost_of(org, start, end)
    return PeriodSummary(
        start=start,
        end=end,
        usage=usage,
        cost=cost,
        credit=Decimal(account.credit_cents) / 100,
        budget=cents_to_dollars(account.monthly_budget_cents),
    )


@dataclass(frozen=True)
class DailyCost:
    day: datetime  # 00:00 UTC
    usage_cost: Decimal  # that day's usage charges (the fixed fee excluded)


def daily_costs(org: Organization, now: datetime | None = None) -> list[DailyCost]:
    """This period's usage charges per UTC day up to today (the dashboard's chart), from the
    same ledgers and price table as ``period_summary``: each source's ``usage_by_day`` in one
    query (a source without one is asked once per day). Lines are rounded to cents per day,
    so the days' sum can differ from the period's usage cost by rounding (a few cents); the
    page's figures come from ``period_summary``."""
    now = now or timezone.now()
    start, end = period_bounds(now)
    days: list[datetime] = []
    day = start
    while day < end and day <= now:
        days.append(day)
        day += timedelta(days=1)
    usage = {d.date(): {meter: 0 for meter in prices.METERS} for d in days}
    amounts: dict[date, dict[str, Decimal]] = {d.date(): {} for d in days}
    for source in meter_sources():
        for d, values in _by_day(source, org, start, end, days, amounts=False).items():
            for meter, value in values.items():
                usage[d][meter] += int(value)
        if source.amounts is not None:
            for d, values in _by_day(source, org, start, end, days, amounts=True).items():
                for meter, value in values.items():
                    amounts[d][meter] = amounts[d].get(meter, Decimal("0")) + value
    return [
        DailyCost(
            day=d,
            usage_cost=prices.period_cost(
                org.plan, usage[d.date()], amounts[d.date()] or None
            ).usage_total,
        )
        for d in days
    ]


def _by_day(
    source: MeterSource,
    org: Organization,
    start: datetime,
    end: datetime,
    days: list[datetime],
    *,
    amounts: bool,
) -> dict[date, dict]:
    """A source's per-day usage (or amounts) over the days shown, grouped or day by day."""
    grouped = source.amounts_by_day if amounts else source.usage_by_day
    if grouped is not None:
        known = {d.date() for d in days}
        return {d: v for d, v in grouped(org, start, end).items() if d in known}
    per_day = source.amounts if amounts else source.usage
    return {d.date(): per_day(org, d, d + timedelta(days=1)) for d in days}
