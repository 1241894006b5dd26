"""The celery beat schedule: which periodic task runs how often (``workers/celery_app.py``
reads it). Every periodic task runs on ``cpu``: they only read and write rows."""

from __future__ import annotations

from typing import Any

from longtune.billing.conf import billing_conf
from longtune.compute import queues, tasks
from longtune.compute.conf import compute_conf


def beat_schedule() -> dict[str, dict[str, Any]]:
    conf = compute_conf()
    periodic = {
        "finetuning-watchdog": (tasks.FINETUNE_WATCHDOG, conf.finetune_watchdog_interval_seconds),
        "inference-watchdog": (tasks.INFERENCE_WATCHDOG, conf.inference_watchdog_interval_seconds),
        "evaluation-watchdog": (tasks.EVALUATION_WATCHDOG, conf.finetune_watchdog_interval_seconds),
        "compute-redispatch": (tasks.REDISPATCH_SWEEP, conf.redispatch_interval_seconds),
        "billing-meter-events": (
            tasks.BILLING_SEND_METER_EVENTS,
            billing_conf().outbox_interval_seconds,
        ),
        "billing-dunning": (tasks.BILLING_DUNNING_SWEEP, billing_conf().dunning_interval_seconds),
    }
    return {
        name: {"task": task, "schedule": every, "options": {"queue": queues.CPU}}
        for name, (task, every) in periodic.items()
    }
