"""Monthly inference tokens counted in real Redis at metering time (inference/token_meter.py):
the counter is rebuilt from the usage rows when missing, incremented (never started) by
metering, read by the gateway's check without summing rows, and the rows stay the ledger."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from longtune.finetuning.quotas import month_start
from longtune.inference import token_meter
from longtune.inference.models import UsageRecord
from longtune.inference.quotas import check_inference_tokens, inference_tokens_this_month
from longtune.inference.services import Metered, Route, record_usage
from longtune.tenancy.models import OrgQuota
from longtune.tenancy.quotas import QuotaExceeded
from tests.conftest import api_client

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture
def redis_counter(redis_url, settings):
    """The real Redis of scripts/test.sh behind the counter; the org's keys are removed after."""
    settings.USE_REDIS, settings.REDIS_URL = True, redis_url
    client = token_meter.redis_client()
    keys: list[str] = []
    yield client, keys
    if keys:
        client.delete(*keys)


def key_of(org, keys: list[str]) -> str:
    key = token_meter.counter_key(org, timezone.now())
    keys.append(key)
    return key


def usage_row(org, prompt: int, completion: int, **fields) -> UsageRecord:
    return UsageRecord.objects.create(
        org=org, endpoint_ref="ep_x", model="m", kind="chat.completion", request_id="r",
        prompt_tokens=prompt, completion_tokens=completion, **fields,
    )  # fmt: skip


def meter(org, prompt: int, completion: int) -> UsageRecord:
    """What the gateway calls for every request (in autocommit, as under sync_to_async)."""
    route = Route(
        endpoint_pk=None, endpoint_public_id="ep_x", model="m", context_length=256,
        adapter=None, internal_url="",
    )  # fmt: skip
    return record_usage(
        org=org, route=route, api_key=None, kind="chat.completion", request_id="r",
        stream=False, metered=Metered(prompt, completion, None, None),
    )  # fmt: skip


def test_missing_counter_is_rebuilt_from_this_months_rows_with_an_expiry(org_a, redis_counter):
    client, keys = redis_counter
    key = key_of(org_a.org, keys)
    usage_row(org_a.org, 100, 20)
    usage_row(org_a.org, 5, 5)
    last_month = usage_row(org_a.org, 1_000, 1_000)
    UsageRecord.objects.for_org(org_a.org).filter(pk=last_month.pk).update(
        created_at=month_start() - timedelta(seconds=1)
    )
    assert client.get(key) is None

    assert token_meter.used_this_month(org_a.org) == 130
    assert int(client.get(key)) == 130
    assert 0 < client.ttl(key) <= 3600  # INFERENCE_TOKEN_COUNTER_TTL_SECONDS: drift heals


@pytest.mark.django_db(transaction=True)
def test_metering_increments_an_existing_counter_and_never_starts_one(make_org, redis_counter):
    client, keys = redis_counter
    org = make_org("Meter").org
    key = key_of(org, keys)
    meter(org, 7, 3)
    assert client.get(key) is None  # a counter started at 10 would hide earlier rows

    assert token_meter.used_this_month(org) == 10  # rebuilt from the ledger
    meter(org, 40, 2)
    assert int(client.get(key)) == 52
    assert token_meter.used_this_month(org) == 52 == inference_tokens_this_month(org)


def test_the_gateway_check_reads_the_counter_without_summing_rows(org_a, redis_counter):
    client, keys = redis_counter
    client.set(key_of(org_a.org, keys), 5, ex=60)
    with CaptureQueriesContext(connection) as queries:
        check_inference_tokens(org_a.org)
    assert not [q for q in queries.captured_queries if "usagerecord" in q["sql"].lower()]


def test_quota_is_refused_from_the_counter(org_a, redis_counter):
    client, keys = redis_counter
    OrgQuota.objects.create(org=org_a.org, monthly_inference_tokens=1_000)
    client.set(key_of(org_a.org, keys), 1_000, ex=60)
    with pytest.raises(QuotaExceeded):
        check_inference_tokens(org_a.org)

    response = api_client(org_a.key("member", scopes=["inference"])).post(
        "/v1/chat/completions",
        {"model": "any", "messages": [{"role": "user", "content": "hi"}]},
        format="json",
    )
    assert response.status_code == 429, response.content
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("quota_exceeded", "monthly_inference_tokens")


def test_counters_are_per_org(org_a, org_b, redis_counter):
    client, keys = redis_counter
    client.set(key_of(org_a.org, keys), 999, ex=60)
    key_of(org_b.org, keys)
    usage_row(org_b.org, 1, 1)
    assert token_meter.used_this_month(org_b.org) == 2


def test_unreachable_redis_falls_back_to_the_ledger(org_a, settings, free_tcp_port):
    settings.USE_REDIS, settings.REDIS_URL = True, f"redis://127.0.0.1:{free_tcp_port}/0"
    usage_row(org_a.org, 3, 4)
    assert token_meter.used_this_month(org_a.org) == 7
    token_meter.add(org_a.org, 5, timezone.now())  # logged, never raised: the row is the ledger


@pytest.fixture
def free_tcp_port() -> int:
    from tests.fixtures.services import free_port

    return free_port()
