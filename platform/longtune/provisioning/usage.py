"""Instance-hours from ``ready`` to ``decommissioned`` into ``InstanceUsage`` (one row per
instance and clock hour), for the billing outbox to meter.

Idempotent: every call recomputes the hours from the instance's timestamps and upserts the
rows, so the supervisor can call it on each pass and a decommission closes the last hour. A
row is ``closed`` once it was computed up to the hour's end (or the instance's end): its hours
are final, and only then does billing meter it.
"""

from __future__ import annotations

import datetime
from decimal import Decimal

from django.utils import timezone

from longtune.provisioning.models import DedicatedInstance, InstanceUsage

HOUR = datetime.timedelta(hours=1)


def _hours(span: datetime.timedelta) -> Decimal:
    return (Decimal(span.total_seconds()) / Decimal(3600)).quantize(Decimal("0.000001"))


def record_usage(instance: DedicatedInstance, now: datetime.datetime | None = None) -> int:
    """Upsert the rows of the hours the instance was ready in, from the newest recorded one
    up to its decommission (or its failure, or ``now``); returns how many rows were written."""
    if instance.ready_at is None:
        return 0
    end = instance.decommissioned_at or instance.failed_at or now or timezone.now()
    if end <= instance.ready_at:
        return 0
    written = 0
    hour = instance.ready_at.replace(minute=0, second=0, microsecond=0)
    # Hours before the newest recorded one are final: start there (the supervisor calls this
    # every few seconds for months-long contracts).
    newest = (
        InstanceUsage.objects.unscoped_across_orgs()
        .filter(instance=instance)
        .order_by("-hour_start")
        .values_list("hour_start", flat=True)
        .first()
    )
    if newest is not None and newest > hour:
        hour = newest
    ended = instance.decommissioned_at or instance.failed_at
    while hour < end:
        start, stop = max(hour, instance.ready_at), min(hour + HOUR, end)
        InstanceUsage.objects.unscoped_across_orgs().update_or_create(
            instance=instance,
            hour_start=hour,
            defaults={
                "org_id": instance.org_id,
                "hours": _hours(stop - start),
                "hourly_price": instance.hourly_price,
                # Final when computed up to the hour's end, or up to the instance's end.
                "closed": stop == hour + HOUR or (ended is not None and stop == ended),
            },
        )
        written += 1
        hour += HOUR
    return written
