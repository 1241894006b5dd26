"""The registry of metered ledgers: every source of billable usage registers itself here.

A source is a ledger the billing app does not own (``inference.UsageRecord``, finished
``finetuning.FineTuningJob`` rows, the dedicated-instance hours of ``provisioning``). It tells
the outbox collector which rows exist since a time and which meter events each row is::

    register_meter_source(MeterSource(
        name="instance_usage",
        rows_since=lambda since: InstanceUsage.objects.unscoped_across_orgs().filter(
            period_end__gte=since, hours__gt=0),
        events=lambda row: [MeterLine(prices.INSTANCE_HOURS, row.hours)],
        timestamp=lambda row: row.period_end,
        usage=lambda org, start, end: {prices.INSTANCE_HOURS: ...},
    ))

The collector (``outbox.collect``) anti-joins ``rows_since`` against the outbox, so a row is
turned into its meter events exactly once whatever order rows commit in; the identifier of
each event is ``<row.public_id>:<meter>`` (stable: a retry of the same row is the same event).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet, Sum

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

    def identifier(self, row: Any, meter: str) -> str:
        return f"{row.public_id}:{meter}"


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


def register_builtin_sources() -> None:
    """The two ledgers of this round: inference requests and finished training jobs (a job
    is billed for what it trained, cancelled and failed ones included)."""
    register_meter_source(
        MeterSource(
            name="inference_usage",
            rows_since=_usage_records_since,
            events=_usage_lines,
            timestamp=lambda record: record.created_at,
            usage=_usage_record_totals,
        )
    )
    register_meter_source(
        MeterSource(
            name="training_job",
            rows_since=_finished_jobs_since,
            events=lambda job: [MeterLine(prices.TRAINING_TOKENS, int(job.trained_tokens or 0))],
            timestamp=lambda job: job.finished_at,
            usage=_trained_token_totals,
        )
    )
