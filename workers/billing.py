"""The billing periodic tasks: the meter-event outbox and the dunning sweep (both on cpu)."""

from __future__ import annotations

from typing import Any

from longtune.billing import dunning
from longtune.billing.conf import billing_conf
from longtune.billing.outbox import run_outbox
from longtune.compute import tasks
from workers.celery_app import app


@app.task(name=tasks.BILLING_SEND_METER_EVENTS)  # beat, queue cpu (compute.schedule)
def send_meter_events() -> dict[str, Any]:
    """Collect new ledger rows into the outbox and send due batches to Stripe."""
    report = run_outbox()
    if report is None:
        return {"enabled": False}
    return {
        "enabled": True,
        "sent": report.sent,
        "batches": report.batches,
        "errors": report.errors,
    }


@app.task(name=tasks.BILLING_DUNNING_SWEEP)  # beat, queue cpu (compute.schedule)
def dunning_sweep() -> dict[str, Any]:
    """Suspend orgs whose grace ended and send budget alerts (budgets work with Stripe off)."""
    result = dunning.sweep()
    return {"enabled": billing_conf().enabled, **result}
