"""The durable outbox of Stripe Billing Meter events: collect from the ledgers, send in batches.

Two steps, both run by the beat task ``compute.tasks.BILLING_SEND_METER_EVENTS`` (never by a
request):

1. ``collect()`` turns every registered source's new ledger rows (``sources.py``) into
   ``MeterEvent`` rows. The unique ``identifier`` (``<ledger public id>:<meter>``) and the
   anti-join make it exactly once, whatever order ledger rows commit in.
2. ``send_pending()`` locks a batch of unsent rows, posts it to the v2 meter event stream
   (``identifier`` set on every event), then marks the batch sent, all in one transaction.
   If the process dies after Stripe accepted the batch but before the mark commits, the rows
   are still unsent and the next tick posts them again: Stripe drops an event whose
   identifier it has already seen, so the retry bills nothing twice. On an error the batch
   backs off exponentially (``next_attempt_at``) and the tick stops.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from longtune.billing.accounts import ensure_customer
from longtune.billing.conf import billing_conf
from longtune.billing.models import BillingAccount, MeterEvent
from longtune.billing.sources import meter_sources
from longtune.billing.stripe_api import stripe_client
from longtune.tenancy.models import Organization

logger = logging.getLogger("longtune.billing")

COLLECT_CHUNK = 2000


def collect(*, limit: int | None = None) -> int:
    """Create the outbox rows of ledger rows not yet in it; returns how many were created."""
    conf = billing_conf()
    since = timezone.now() - timedelta(days=conf.outbox_lookback_days)
    created = 0
    for source in meter_sources():
        outboxed = (
            MeterEvent.objects.unscoped_across_orgs().filter(source=source.name).values("source_pk")
        )
        rows = source.rows_since(since).exclude(pk__in=outboxed).order_by("pk")
        if limit is not None:
            rows = rows[:limit]
        batch: list[MeterEvent] = []
        for row in rows.iterator(chunk_size=COLLECT_CHUNK):
            for line in source.events(row):
                if line.value <= 0:
                    continue
                batch.append(
                    MeterEvent(
                        org_id=row.org_id,
                        source=source.name,
                        source_pk=row.pk,
                        identifier=source.identifier(row, line.meter),
                        meter=line.meter,
                        value=int(line.value),
                        timestamp=source.timestamp(row),
                    )
                )
            if len(batch) >= COLLECT_CHUNK:
                created += _insert(batch)
                batch = []
        created += _insert(batch)
    return created


def _insert(batch: list[MeterEvent]) -> int:
    if not batch:
        return 0
    # ignore_conflicts: a concurrent collector inserted the same identifiers first.
    MeterEvent.objects.bulk_create(batch, ignore_conflicts=True)
    return len(batch)


@dataclass
class SendReport:
    sent: int = 0
    batches: int = 0
    errors: list[str] = field(default_factory=list)


def backoff_seconds(attempts: int) -> float:
    conf = billing_conf()
    return min(
        conf.outbox_backoff_base_seconds * 2 ** max(attempts - 1, 0),
        conf.outbox_backoff_max_seconds,
    )


def _due() -> Q:
    return Q(sent_at__isnull=True) & (
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now())
    )


def _customer_ids(org_ids: set[int]) -> dict[int, str]:
    accounts = BillingAccount.objects.unscoped_across_orgs().filter(org_id__in=org_ids)
    known = {a.org_id: a.stripe_customer_id for a in accounts if a.stripe_customer_id}
    for org in Organization.objects.filter(pk__in=org_ids - set(known)):
        known[org.pk] = ensure_customer(org)  # the org's first meter event: its customer
    return known


def event_payload(event: MeterEvent, customer_id: str) -> dict[str, Any]:
    conf = billing_conf()
    return {
        "event_name": conf.meter_event_names[event.meter],
        "identifier": event.identifier,
        "timestamp": event.timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "payload": {"stripe_customer_id": customer_id, "value": str(event.value)},
    }


class _StreamSession:
    """A meter event session (its token authenticates the stream for ~15 minutes), made on
    first use and reused for every batch of one tick."""

    def __init__(self) -> None:
        self.client = None
        self.token = ""
        self.expires = 0.0

    def post(self, events: list[dict[str, Any]]) -> None:
        if self.client is None:
            self.client = stripe_client()
        if time.monotonic() >= self.expires:
            session = self.client.v2.billing.meter_event_session.create()
            self.token = session.authentication_token
            self.expires = time.monotonic() + SESSION_REUSE_SECONDS
        self.client.v2.billing.meter_event_stream.create(
            params={"events": events}, options={"api_key": self.token}
        )


SESSION_REUSE_SECONDS = 600  # Stripe's sessions last 15 minutes; renew well before


def _post(events: list[dict[str, Any]], session: _StreamSession | None = None) -> None:
    (session or _StreamSession()).post(events)


def _mark_sent(pks: list[int]) -> None:
    MeterEvent.objects.unscoped_across_orgs().filter(pk__in=pks).update(
        sent_at=timezone.now(), last_error=""
    )


def send_batch(batch_size: int, session: _StreamSession | None = None) -> int:
    """Send one batch; returns how many were sent (0: nothing due). Raises on a Stripe error
    after recording the backoff."""
    with transaction.atomic():
        batch = list(
            MeterEvent.objects.unscoped_across_orgs()
            .filter(_due())
            .select_for_update(skip_locked=True)
            .order_by("pk")[:batch_size]
        )
        if not batch:
            return 0
        customers = _customer_ids({e.org_id for e in batch})
        payload = [event_payload(e, customers[e.org_id]) for e in batch]
        pks = [e.pk for e in batch]
        failure: Exception | None = None
        try:
            _post(payload, session)
        except Exception as error:  # recorded in this (committed) transaction, then raised
            failure = error
            _record_failure(batch, error)
        else:
            _mark_sent(pks)
    if failure is not None:
        raise failure
    return len(batch)


def _record_failure(batch: list[MeterEvent], error: Exception) -> None:
    now = timezone.now()
    for event in batch:
        event.attempts += 1
        event.next_attempt_at = now + timedelta(seconds=backoff_seconds(event.attempts))
        event.last_error = f"{type(error).__name__}: {error}"[:2000]
    MeterEvent.objects.unscoped_across_orgs().bulk_update(
        batch, ["attempts", "next_attempt_at", "last_error"]
    )


def send_pending(*, max_batches: int | None = None) -> SendReport:
    """Send due events in batches until none are due, ``max_batches`` is reached or Stripe
    errors (the failed batch backs off; the rest wait for the next tick)."""
    conf = billing_conf()
    report = SendReport()
    session = _StreamSession()
    for _ in range(max_batches or conf.outbox_max_batches):
        try:
            sent = send_batch(conf.outbox_batch_size, session)
        except Exception as error:  # the peer is down or refused: stop this tick
            logger.warning("meter event batch failed: %s", error)
            report.errors.append(str(error))
            break
        if not sent:
            break
        report.sent += sent
        report.batches += 1
    return report


def run_outbox() -> SendReport | None:
    """The beat task's body: nothing at all while billing is off."""
    if not billing_conf().enabled:
        return None
    collect()
    return send_pending()
