"""Stripe's asynchronous meter error reports (``v1.billing.meter.error_report_triggered``).

The v2 meter event stream accepts a batch and validates it later; events it then rejects
(unknown customer, timestamp too far in the past, ...) are reported as a *thin* event to an
event destination: ``POST /v1/billing/webhooks/stripe/thin``. It is verified with the same
signature scheme (``StripeClient.parse_event_notification``), stored once like every webhook,
and the full event is fetched from Stripe (``/v2/core/events/{id}``). Each sample error names
the meter event by its ``identifier``: the outbox row gets ``stripe_error`` (staff filter on it
in the admin; reconciliation stops counting it as sent) and the error is logged.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import stripe
from django.db import IntegrityError, transaction

from longtune.api.errors import ApiError
from longtune.billing.conf import billing_conf
from longtune.billing.models import MeterEvent, WebhookEvent
from longtune.billing.stripe_api import stripe_client

logger = logging.getLogger("longtune.billing")

ERROR_REPORT = "v1.billing.meter.error_report_triggered"


def receive_thin(payload: bytes, signature: str | None) -> tuple[bool, str]:
    """(duplicate, outcome) for one thin event notification."""
    conf = billing_conf()
    try:
        parsed = json.loads(payload)
    except (ValueError, RecursionError) as error:
        raise ApiError(status=400, code="invalid_webhook", message="Not JSON.") from error
    if not isinstance(parsed, dict) or not {"id", "type", "created"} <= parsed.keys():
        raise ApiError(
            status=400, code="invalid_webhook", message="Not a Stripe event notification."
        )
    if not conf.stripe_webhook_secret or not conf.enabled:
        raise ApiError(status=404, code="not_found", message="Billing webhooks are not enabled.")
    try:
        notification = stripe_client().parse_event_notification(
            payload, signature, conf.stripe_webhook_secret, tolerance=conf.webhook_tolerance_seconds
        )
    except stripe.SignatureVerificationError as error:
        raise ApiError(status=400, code="invalid_webhook", message=str(error)) from error
    except (ValueError, KeyError, TypeError) as error:
        raise ApiError(
            status=400, code="invalid_webhook", message="Not a Stripe event notification."
        ) from error
    try:
        with transaction.atomic():
            stored = WebhookEvent.objects.create(
                stripe_event_id=notification.id, type=notification.type, created=0
            )
    except IntegrityError:
        return True, "already processed"
    outcome = "ignored: unhandled type"
    if notification.type == ERROR_REPORT:
        outcome = record_error_report(notification.fetch_event().data)
    stored.outcome = outcome[:200]
    stored.save(update_fields=["outcome"])
    return False, outcome


def record_error_report(data: Any) -> str:
    marked = 0
    for error_type in data.reason.error_types:
        for sample in error_type.sample_errors:
            identifier = sample.request.identifier
            message = f"{error_type.code}: {sample.error_message}"[:300]
            logger.error("Stripe rejected meter event %s: %s", identifier, message)
            marked += (
                MeterEvent.objects.unscoped_across_orgs()
                .filter(identifier=identifier)
                .update(stripe_error=message)
            )
    total = data.reason.error_count
    logger.error("Stripe meter error report: %s errors (%s samples matched)", total, marked)
    return f"meter error report: {total} errors, {marked} outbox rows marked"
