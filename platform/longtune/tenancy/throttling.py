"""Per-org request throttling from the org's ``requests_per_minute`` quota.

Fixed one-minute windows counted with ``cache.add`` + ``cache.incr``: both are atomic in Redis
(the deployment cache), so counts are exact across web processes; DRF's stock sliding-window
throttle read-modify-writes a list and loses counts under concurrency. Over the limit -> 429
``rate_limit_exceeded`` with ``Retry-After`` (seconds until the window ends).

``PublicEndpointThrottle`` limits the unauthenticated endpoints (signup, accept invitation)
per client IP.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from longtune.tenancy.audit import client_ip
from longtune.tenancy.models import Organization


def _window(window_seconds: int, now: float) -> int:
    return int(now // window_seconds)


def _hit(bucket: str, window_seconds: int, now: float) -> int:
    key = f"throttle:{bucket}:{_window(window_seconds, now)}"
    cache.add(key, 0, timeout=window_seconds * 2)
    try:
        return cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=window_seconds * 2)
        return 1


def _org_bucket(org: Organization) -> str:
    return f"org:{org.pk}"


def requests_this_minute(org: Organization) -> int:
    key = f"throttle:{_org_bucket(org)}:{_window(60, time.time())}"
    return int(cache.get(key, 0))


class FixedWindowThrottle(BaseThrottle):
    window_seconds = 60

    def bucket(self, request: Request) -> str | None:
        raise NotImplementedError

    def limit(self, request: Request) -> int:
        raise NotImplementedError

    def allow_request(self, request: Request, view: Any) -> bool:
        bucket = self.bucket(request)
        if bucket is None:
            return True
        now = time.time()
        self._wait = self.window_seconds - (now % self.window_seconds)
        return _hit(bucket, self.window_seconds, now) <= self.limit(request)

    def wait(self) -> float | None:
        return getattr(self, "_wait", None)


class OrgRateThrottle(FixedWindowThrottle):
    window_seconds = 60

    def bucket(self, request: Request) -> str | None:
        org = getattr(request, "org", None)
        return _org_bucket(org) if org is not None else None

    def limit(self, request: Request) -> int:
        # Lazy: DRF imports this class while api.errors (which quotas needs) is still loading.
        from longtune.tenancy.quotas import effective_quota

        return effective_quota(request.org).requests_per_minute


class PublicEndpointThrottle(FixedWindowThrottle):
    """Per-IP limit for unauthenticated endpoints (settings.PUBLIC_ENDPOINT_REQUESTS_PER_HOUR)."""

    window_seconds = 3600

    def bucket(self, request: Request) -> str | None:
        return f"ip:{client_ip(request) or 'unknown'}"

    def limit(self, request: Request) -> int:
        return int(getattr(settings, "PUBLIC_ENDPOINT_REQUESTS_PER_HOUR", 30))
