"""The registry of metered ledgers: every source of billable usage registers itself here.

A source is a ledger the billing app does not own (``inference.UsageRecord``, finished
``finetuning.FineTuningJob`` rows, the closed dedicated-instance hours of ``provisioning``). It
tells the outbox collector which rows exist since a time and which meter events each row is::

    register_meter_source(MeterSource(
        name="training_job",
        rows_since=lambda since: FineTuningJob.objects.unscoped_across_orgs().filter(...),
        events=lambda job: [MeterLine(prices.TRAINING_TOKENS, job.trained_tokens)],
        timestamp=lambda job: job.finished_at,
        usage=lambda org, start, end: {prices.TRAINING_TOKENS: ...},
    ))

The collector (``outbox.collect``) anti-joins ``rows_since`` against the outbox, so a row is
turned into its meter events exactly once whatever order rows commit in; the identifier of
each event is ``<row id>:<meter>`` with the row's stable id (its ``public_id`` unless the
source says otherwise): a retry of the same row is the same event.

A source that prices its own rows (``amounts``: dedicated instances under a contract's hourly
price) overrides the price table for its meters in the period's cost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import TruncDay

from longtune.billing import prices


@dataclass(frozen=True)
class MeterLine:
    meter: str  # prices.METERS
    value: int


@dataclass(frozen=True)
class MeterSource:
    name: str
    rows_since: Callable[[datetime], QuerySet]  # unscoped ledger rows at or after a time
    events: Callable[[Any], Iterable[MeterLine]]  # what one row meters (zero values dropped)
    timestamp: Callable[[Any], datetime]  # when the usage happened
    # The ledger's totals per meter for one org in [start, end): what the period costs and
    # what reconciliation compares the sent meter events with.
    usage: Callable[[Any, datetime, datetime], dict[str, int]]
    # The row's stable id in the identifier; the public id unless the ledger has none.
    row_id: Callable[[Any], str] = field(default=lambda row: row.public_id)
    # Unrounded dollars per meter for one org in [start, end), for meters this source prices
    # itself (org, start, end -> {meter: Decimal}); None: the plan's price table prices them.
    amounts: Callable[[Any, datetime, datetime], dict[str, Decimal]] | None = None
    # The same two, per UTC day of [start, end), in one query each (the billing page's chart);
    # None: the chart asks ``usage``/``amounts`` once per day instead.
    usage_by_day: Callable[[Any, datetime, datetime], dict[date, dict[str, int]]] | None = None
    amounts_by_day: Callable[[Any, datetime, datetime], dict[date, dict[str, Decimal]]] | None = (
        None
    )

    def identifier(self, row: Any, meter: str) -> str:
        return f"{self.row_id(row)}:{meter}"


_SOURCES: dict[str, MeterSource] = {}


def register_meter_source(source: MeterSource) -> None:
    _SOURCES[source.name] = source


def meter_sources() -> tuple[MeterSource, ...]:
    return tuple(_SOURCES.values())


def _usage_records_since(since: datetime) -> QuerySet:
    from longtune.inference.models import UsageRecord

    return UsageRecord.objects.unscoped_across_orgs().filter(
        Q(prompt_tokens__gt=0) | Q(completion_tokens__gt=0), created_at__gte=since
    )


def _usage_lines(record: Any) -> list[MeterLine]:
    return [
        MeterLine(prices.PROMPT_TOKENS, record.prompt_tokens),
        MeterLine(prices.COMPLETION_TOKENS, record.completion_tokens),
    ]


def _usage_record_totals(org: Any, start: datetime, end: datetime) -> dict[str, int]:
    from longtune.inference.models import UsageRecord

    totals = (
        UsageRecord.objects.for_org(org)
        .filter(created_at__gte=start, created_at__lt=end)
        .aggregate(prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"))
    )
    return {
        prices.PROMPT_TOKENS: int(totals["prompt"] or 0),
        prices.COMPLETION_TOKENS: int(totals["completion"] or 0),
    }


def _usage_records_by_day(org: Any, start: datetime, end: datetime) -> dict[date, dict[str, int]]:
    from longtune.inference.models import UsageRecord

    rows = (
        UsageRecord.objects.for_org(org)
        .filter(created_at__gte=start, created_at__lt=end)
        .annotate(day=TruncDay("created_at"))
        .values("day")
        .annotate(prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"))
    )
    return {
        row["day"].date(): {
            prices.PROMPT_TOKENS: int(row["prompt"] or 0),
            prices.COMPLETION_TOKENS: int(row["completion"] or 0),
        }
        for row in rows
    }


def _trained_tokens_by_day(org: Any, start: datetime, end: datetime) -> dict[date, dict[str, int]]:
    from longtune.finetuning.models import TERMINAL_STATUSES, FineTuningJob

    rows = (
        FineTuningJob.objects.for_org(org)
        .filter(status__in=TERMINAL_STATUSES, finished_at__gte=start, finished_at__lt=end)
        .annotate(day=TruncDay("finished_at"))
        .values("day")
        .annotate(total=Sum("trained_tokens"))
    )
    return {row["day"].date(): {prices.TRAINING_TOKENS: int(row["total"] or 0)} for row in rows}


def _trained_token_totals(org: Any, start: datetime, end: datetime) -> dict[str, int]:
    from longtune.finetuning.models import TERMINAL_STATUSES, FineTuningJob

    total = (
        FineTuningJob.objects.for_org(org)
        .filter(status__in=TERMINAL_STATUSES, finished_at__gte=start, finished_at__lt=end)
        .aggregate(total=Sum("trained_tokens"))["total"]
    )
    return {prices.TRAINING_TOKENS: int(total or 0)}


def _finished_jobs_since(since: datetime) -> QuerySet:
    from longtune.finetuning.models import TERMINAL_STATUSES, FineTuningJob

    return FineTuningJob.objects.unscoped_across_orgs().filter(
        status__in=TERMINAL_STATUSES, finished_at__gte=since, trained_tokens__gt=0
    )


# --------------------------------------------------------------------------- instance time


def instance_minutes(hours: Decimal) -> int:
    """A row's fraction of an hour as whole minutes (half a minute rounds up): the integer
    Stripe meters, and the quantity the product prices, so both bill the same minutes."""
    return int((Decimal(hours) * 60).quantize(Decimal(1), rounding=ROUND_HALF_UP))


# The smallest fraction of an hour that is at least one minute once rounded (30 s): a shorter
# row meters nothing, so the collector must not pick it up again on every tick.
MIN_METERED_HOURS = Decimal("0.008334")


def _closed_instance_hours_since(since: datetime) -> QuerySet:
    from longtune.provisioning.models import InstanceUsage

    return (
        InstanceUsage.objects.unscoped_across_orgs()
        .select_related("instance")
        .filter(closed=True, hours__gte=MIN_METERED_HOURS, hour_start__gte=since)
    )


def _instance_rows(org: Any, start: datetime, end: datetime) -> list[tuple[datetime, int, Decimal]]:
    """(hour, minutes, contract hourly price) of the org's closed instance hours in
    [start, end)."""
    from longtune.provisioning.models import InstanceUsage

    rows = (
        InstanceUsage.objects.for_org(org)
        .filter(
            closed=True, hours__gte=MIN_METERED_HOURS, hour_start__gte=start, hour_start__lt=end
        )
        .values_list("hour_start", "hours", "hourly_price")
    )
    return [(hour, instance_minutes(hours), price) for hour, hours, price in rows]


def _instance_amount(org: Any, minutes: int, price: Decimal) -> Decimal:
    """One closed hour at its contract's hourly price; the plan's table rate where the
    contract set none (0). Stripe bills the same minutes at the price on the customer's
    subscription for this meter (a contract gets its own Price on the same meter)."""
    rate = price if price > 0 else prices.plan_price(org.plan).rates[prices.INSTANCE_MINUTES]
    return Decimal(minutes) * rate / 60


def _instance_minute_totals(org: Any, start: datetime, end: datetime) -> dict[str, int]:
    return {prices.INSTANCE_MINUTES: sum(m for _, m, _ in _instance_rows(org, start, end))}


def _instance_amounts(org: Any, start: datetime, end: datetime) -> dict[str, Decimal]:
    rows = _instance_rows(org, start, end)
    total = sum((_instance_amount(org, m, p) for _, m, p in rows), Decimal("0"))
    return {prices.INSTANCE_MINUTES: total}


def _instance_minutes_by_day(
    org: Any, start: datetime, end: datetime
) -> dict[date, dict[str, int]]:
    days: dict[date, int] = defaultdict(int)
    for hour, minutes, _ in _instance_rows(org, start, end):
        days[hour.date()] += minutes
    return {day: {prices.INSTANCE_MINUTES: m} for day, m in days.items()}


def _instance_amounts_by_day(
    org: Any, start: datetime, end: datetime
) -> dict[date, dict[str, Decimal]]:
    days: dict[date, Decimal] = defaultdict(Decimal)
    for hour, minutes, price in _instance_rows(org, start, end):
        days[hour.date()] += _instance_amount(org, minutes, price)
    return {day: {prices.INSTANCE_MINUTES: amount} for day, amount in days.items()}


def _instance_row_id(row: Any) -> str:
    """``<instance public id>.<YYYYMMDDTHH>``: the row's natural key (one row per instance and
    UTC hour), stable across rewrites of the same hour."""
    return f"{row.instance.public_id}.{row.hour_start:%Y%m%dT%H}"


def register_builtin_sources() -> None:
    """The three ledgers: inference requests, finished training jobs (a job is billed for
    what it trained, cancelled and failed ones included) and closed dedicated-instance hours
    (in whole minutes; an hour still running is metered once it closes)."""
    register_meter_source(
        MeterSource(
            name="inference_usage",
            rows_since=_usage_records_since,
            events=_usage_lines,
            timestamp=lambda record: record.created_at,
            usage=_usage_record_totals,
            usage_by_day=_usage_records_by_day,
        )
    )
    register_meter_source(
        MeterSource(
            name="training_job",
            rows_since=_finished_jobs_since,
            events=lambda job: [MeterLine(prices.TRAINING_TOKENS, int(job.trained_tokens or 0))],
            timestamp=lambda job: job.finished_at,
            usage=_trained_token_totals,
            usage_by_day=_trained_tokens_by_day,
        )
    )
    register_meter_source(
        MeterSource(
            name="instance_usage",
            rows_since=_closed_instance_hours_since,
            events=lambda row: [MeterLine(prices.INSTANCE_MINUTES, instance_minutes(row.hours))],
            timestamp=lambda row: row.hour_start,
            usage=_instance_minute_totals,
            row_id=_instance_row_id,
            amounts=_instance_amounts,
            usage_by_day=_instance_minutes_by_day,
            amounts_by_day=_instance_amounts_by_day,
        )
    )
