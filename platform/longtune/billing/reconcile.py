"""Reconciliation: the ledger's totals vs the meter events sent to Stripe, per org and period.

A row with ``missing`` > 0 is usage not yet metered (still in the outbox, backing off, or
not collected); ``missing`` < 0 would be over-reporting and is a bug. Used by the
``billing_reconcile`` command and the admin's "Reconcile" action.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Sum

from longtune.billing import prices
from longtune.billing.models import MeterEvent
from longtune.billing.usage import ledger_usage, period_bounds, sent_usage
from longtune.tenancy.models import Organization


@dataclass(frozen=True)
class ReconciliationRow:
    org: str  # slug
    meter: str
    ledger: int
    sent: int
    pending: int  # in the outbox, not yet accepted by Stripe

    @property
    def missing(self) -> int:
        return self.ledger - self.sent


def reconcile(orgs: list[Organization], at: datetime | None = None) -> list[ReconciliationRow]:
    start, end = period_bounds(at)
    rows = []
    for org in orgs:
        ledger = ledger_usage(org, start, end)
        sent = sent_usage(org, start, end)
        pending = {
            row["meter"]: int(row["total"])
            for row in MeterEvent.objects.for_org(org)
            .filter(sent_at__isnull=True, timestamp__gte=start, timestamp__lt=end)
            .values("meter")
            .annotate(total=Sum("value"))
        }
        rows += [
            ReconciliationRow(org.slug, meter, ledger[meter], sent[meter], pending.get(meter, 0))
            for meter in prices.METERS
            if ledger[meter] or sent[meter] or pending.get(meter)
        ]
    return rows
