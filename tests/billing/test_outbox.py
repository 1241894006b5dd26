"""The meter-event outbox against the fake Stripe server (a real process over HTTP)."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
import stripe
from django.utils import timezone

from longtune.billing import outbox, prices
from longtune.billing.accounts import account_for
from longtune.billing.models import MeterEvent
from longtune.billing.stripe_api import stripe_client
from longtune.billing.usage import ledger_usage, period_bounds, sent_usage
from tests.finetuning.helpers import make_job
from tests.inference.helpers import make_endpoint, make_usage

pytestmark = pytest.mark.django_db


def _ledger(org, requests: int = 3):
    endpoint = make_endpoint(org, status="ready")
    records = [make_usage(endpoint, prompt=100 + i, completion=10 + i) for i in range(requests)]
    job = make_job(org, status="succeeded", trained_tokens=123_456, finished_at=timezone.now())
    return records, job


def test_billing_off_collects_and_sends_nothing(org_a):
    _ledger(org_a.org)
    assert outbox.run_outbox() is None
    assert MeterEvent.objects.for_org(org_a.org).count() == 0


def test_every_ledger_row_becomes_exactly_one_event_per_meter(billing_on, org_a):
    records, job = _ledger(org_a.org)
    make_usage(make_endpoint(org_a.org), prompt=0, completion=0)  # nothing to bill
    make_job(org_a.org, status="running", trained_tokens=None)  # not finished: not yet billed
    assert outbox.collect() == 2 * len(records) + 1
    assert outbox.collect() == 0  # a second pass finds nothing new
    identifiers = set(MeterEvent.objects.for_org(org_a.org).values_list("identifier", flat=True))
    assert identifiers == {f"{r.public_id}:prompt_tokens" for r in records} | {
        f"{r.public_id}:completion_tokens" for r in records
    } | {f"{job.public_id}:training_tokens"}


def test_sent_events_carry_the_ledger_identifier_customer_and_value(billing_on, org_a):
    records, job = _ledger(org_a.org)
    report = outbox.run_outbox()
    assert report.sent == 7 and report.errors == []
    state = billing_on.state()
    customer = account_for(org_a.org).stripe_customer_id
    assert customer and [c["id"] for c in state["customers"]] == [customer]
    events = {e["identifier"]: e for e in state["meter_events"]}
    sent = events[f"{job.public_id}:training_tokens"]
    assert sent["event_name"] == "longtune_training_tokens"
    assert sent["payload"] == {"stripe_customer_id": customer, "value": "123456"}
    prompt = events[f"{records[0].public_id}:prompt_tokens"]
    assert prompt["payload"]["value"] == "100" and prompt["timestamp"].endswith("Z")
    assert not MeterEvent.objects.for_org(org_a.org).filter(sent_at__isnull=True).exists()


def test_batches_respect_the_batch_size(billing_on, settings, org_a):
    settings.BILLING_OUTBOX_BATCH_SIZE = 2
    _ledger(org_a.org, requests=3)  # 7 events -> 4 batches
    report = outbox.run_outbox()
    assert (report.sent, report.batches) == (7, 4)
    assert billing_on.state()["meter_requests"] == 4


def test_a_crash_after_sending_before_marking_sent_duplicates_nothing(billing_on, org_a):
    """Stripe accepted the batch, then the worker died before the commit: the rows are still
    unsent, the retry posts the same identifiers and Stripe keeps one event each."""
    _ledger(org_a.org)
    outbox.collect()
    with mock.patch.object(outbox, "_mark_sent", side_effect=SystemExit("worker killed")):
        with pytest.raises(SystemExit):
            outbox.send_batch(100)
    assert MeterEvent.objects.for_org(org_a.org).filter(sent_at__isnull=True).count() == 7
    assert len(billing_on.state()["meter_events"]) == 7  # Stripe has them already

    report = outbox.send_pending()
    state = billing_on.state()
    assert report.sent == 7
    assert state["duplicate_meter_events"] == 7  # the retry re-sent every identifier...
    assert len(state["meter_events"]) == 7  # ...and Stripe still holds one event per row
    assert not MeterEvent.objects.for_org(org_a.org).filter(sent_at__isnull=True).exists()


def test_errors_back_off_and_the_next_tick_retries(billing_on, settings, org_a):
    settings.BILLING_OUTBOX_BACKOFF_BASE_SECONDS = 10
    _ledger(org_a.org, requests=1)
    billing_on.control("fail", {"path": "/v2/billing/meter_event_stream", "statuses": [500]})
    report = outbox.run_outbox()
    assert report.sent == 0 and len(report.errors) == 1
    failed = list(MeterEvent.objects.for_org(org_a.org))
    assert len(failed) == 3
    assert all(e.attempts == 1 and e.sent_at is None and e.last_error for e in failed)
    assert all(e.next_attempt_at > timezone.now() + timedelta(seconds=5) for e in failed)
    assert outbox.send_pending().sent == 0  # still backing off
    MeterEvent.objects.for_org(org_a.org).update(next_attempt_at=timezone.now())
    assert outbox.send_pending().sent == 3
    assert outbox.backoff_seconds(1) == 10 and outbox.backoff_seconds(3) == 40


def test_backoff_is_capped(settings):
    settings.BILLING_OUTBOX_BACKOFF_BASE_SECONDS = 5
    settings.BILLING_OUTBOX_BACKOFF_MAX_SECONDS = 60
    assert [outbox.backoff_seconds(n) for n in (1, 2, 3, 4, 5, 9)] == [5, 10, 20, 40, 60, 60]


def test_reconciliation_meter_events_per_customer_equal_the_ledger(billing_on, org_a, org_b):
    _ledger(org_a.org, requests=5)
    _ledger(org_b.org, requests=2)
    outbox.run_outbox()
    start, end = period_bounds()
    state = billing_on.state()
    for handle in (org_a, org_b):
        org = handle.org
        customer = account_for(org).stripe_customer_id
        at_stripe = {meter: 0 for meter in prices.METERS}
        names = {name: meter for meter, name in billing_on_names().items()}
        for event in state["meter_events"]:
            if event["payload"]["stripe_customer_id"] == customer:
                at_stripe[names[event["event_name"]]] += int(event["payload"]["value"])
        ledger = ledger_usage(org, start, end)
        assert at_stripe == ledger == sent_usage(org, start, end)
        assert ledger[prices.PROMPT_TOKENS] > 0 and ledger[prices.TRAINING_TOKENS] == 123_456


def billing_on_names() -> dict[str, str]:
    from longtune.billing.conf import billing_conf

    return billing_conf().meter_event_names


def test_the_fake_server_refuses_parameters_stripe_does_not_accept(billing_on):
    """The peer is strict (checked against Stripe's published description): a typo fails."""
    client = stripe_client()
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.customers.create(params={"name": "x", "nmae": "typo"})
    assert "nmae" in str(refused.value)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.billing.meter_events.create(params={"event_name": "x"})  # payload missing
    assert "payload" in str(refused.value)
    session = client.v2.billing.meter_event_session.create()
    with pytest.raises(stripe.StripeError):
        client.v2.billing.meter_event_stream.create(
            params={"events": [{"event_name": "x", "payload": {}, "value": 1}]},
            options={"api_key": session.authentication_token},
        )
    with pytest.raises(stripe.AuthenticationError):  # the stream needs a session token
        client.v2.billing.meter_event_stream.create(params={"events": []})
