"""Usage numbers for the quotas the inference app consumes, registered with tenancy.quotas.

``max_endpoints`` is reserved atomically at creation/start (``reserve_quota``: the org row
lock orders concurrent creates). ``monthly_inference_tokens`` is checked by the gateway
before a request is proxied: a request is refused once the month's metered tokens reach the
limit. It is a soft limit by design — the prompt is tokenized on the replica, so the request
that crosses the line is served in full (at most one request's tokens over).
"""

from __future__ import annotations

from django.db.models import F, Sum

from longtune.finetuning.quotas import month_start
from longtune.inference.models import ACTIVE_ENDPOINT_STATUSES, Endpoint, UsageRecord
from longtune.tenancy.models import Organization
from longtune.tenancy.quotas import (
    QuotaExceeded,
    effective_quota,
    register_usage_provider,
)


def active_endpoint_count(org: Organization) -> int:
    return (
        Endpoint.objects.for_org(org)
        .live()
        .filter(status__in=ACTIVE_ENDPOINT_STATUSES, stop_requested=False)
        .count()
    )


def inference_tokens_this_month(org: Organization) -> int:
    total = (
        UsageRecord.objects.for_org(org)
        .filter(created_at__gte=month_start())
        .aggregate(total=Sum(F("prompt_tokens") + F("completion_tokens")))["total"]
    )
    return int(total or 0)


def check_inference_tokens(org: Organization) -> None:
    """429 ``quota_exceeded`` (param ``monthly_inference_tokens``) once the month is used up."""
    limit = effective_quota(org).monthly_inference_tokens
    used = inference_tokens_this_month(org)
    if used >= limit:
        raise QuotaExceeded("monthly_inference_tokens", limit=limit, used=used, requested=1)


def register_usage_providers() -> None:
    register_usage_provider("max_endpoints", active_endpoint_count)
    register_usage_provider("monthly_inference_tokens", inference_tokens_this_month)
