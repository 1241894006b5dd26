"""The month's inference tokens per org, counted in Redis at metering time.

Why: the gateway checks ``monthly_inference_tokens`` before every request; summing the org's
usage rows for that is O(rows this month) per request, on the hot path. The usage rows stay the
ledger of record (billing and ``GET /v1/organization`` sum them); Redis holds a counter per org
per month, ``longtune:inference_tokens:<org public id>:<YYYY-MM>``, so the check is one GET.

- Metering (``add``) increments the counter only if it exists (one Lua script, atomic with the
  key's expiry): a counter is never started from zero while earlier rows exist.
- The check (``used_this_month``) rebuilds a missing counter from the rows (``SET NX`` with a
  TTL), then reads it. The counter expires after ``token_counter_ttl_seconds`` and is rebuilt,
  so drift (an increment lost to a Redis error, one racing a rebuild) heals within that time.
  The limit is soft anyway (inference/quotas.py): the request that crosses it is served.
- Without Redis (the embedded default) the check sums the rows, as before.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime

import redis
from django.conf import settings
from django.db.models import F, Sum
from django.utils import timezone

from longtune.finetuning.quotas import month_start
from longtune.inference.conf import inference_conf
from longtune.inference.models import UsageRecord
from longtune.tenancy.models import Organization

logger = logging.getLogger("longtune.inference")

# KEYS[1] the counter, ARGV[1] tokens: INCRBY only when the counter exists (keeps its TTL).
_INCR_IF_PRESENT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('INCRBY', KEYS[1], ARGV[1])
end
return false
"""


def counter_key(org: Organization, at: datetime) -> str:
    return f"longtune:inference_tokens:{org.public_id}:{at:%Y-%m}"


@functools.cache
def _client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)


def redis_client() -> redis.Redis | None:
    """The counter's Redis (the cache/broker one); None on the embedded default."""
    return _client_for(settings.REDIS_URL) if settings.USE_REDIS else None


def ledger_tokens(org: Organization, at: datetime | None = None) -> int:
    """Prompt + completion tokens of the org's usage rows in ``at``'s month (the ledger)."""
    start = month_start(at)
    total = (
        UsageRecord.objects.for_org(org)
        .filter(created_at__gte=start)
        .aggregate(total=Sum(F("prompt_tokens") + F("completion_tokens")))["total"]
    )
    return int(total or 0)


def add(org: Organization, tokens: int, at: datetime) -> None:
    """Count ``tokens`` metered at ``at`` (the usage row is already written)."""
    client = redis_client()
    if client is None or tokens <= 0:
        return
    try:
        client.eval(_INCR_IF_PRESENT, 1, counter_key(org, at), int(tokens))
    except redis.RedisError:  # the row is the ledger; the counter heals at its expiry
        logger.warning("inference token counter of %s not incremented", org.public_id)


def used_this_month(org: Organization) -> int:
    """The month's metered tokens: one Redis GET, the rows summed only to (re)build it."""
    now = timezone.now()
    client = redis_client()
    if client is None:
        return ledger_tokens(org, now)
    key = counter_key(org, now)
    try:
        value = client.get(key)
        if value is not None:
            return int(value)
        total = ledger_tokens(org, now)
        client.set(key, total, nx=True, ex=inference_conf().token_counter_ttl_seconds)
        return total
    except redis.RedisError:
        logger.warning("inference token counter of %s unavailable; summing rows", org.public_id)
        return ledger_tokens(org, now)
