"""Login throttling: failed log-ins counted per client IP and per email in fixed windows.

Counted in the cache (Redis in a deployment: atomic across processes). Over the limit, the log-in
form refuses before checking the password, so guessing costs the attacker a window per
``LOGIN_MAX_FAILURES`` tries whichever IPs or emails they rotate.
"""

from __future__ import annotations

import hashlib
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

from longtune.tenancy.audit import client_ip


def _window_seconds() -> int:
    return int(getattr(settings, "LOGIN_THROTTLE_WINDOW_SECONDS", 900))


def _max_failures() -> int:
    return int(getattr(settings, "LOGIN_MAX_FAILURES", 10))


def _keys(request: HttpRequest, email: str) -> list[str]:
    window = int(time.time() // _window_seconds())
    email_hash = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return [
        f"login-fail:ip:{client_ip(request)}:{window}",
        f"login-fail:email:{email_hash}:{window}",
    ]


def login_blocked(request: HttpRequest, email: str) -> bool:
    return any(int(cache.get(key, 0)) >= _max_failures() for key in _keys(request, email))


def record_login_failure(request: HttpRequest, email: str) -> None:
    for key in _keys(request, email):
        cache.add(key, 0, timeout=_window_seconds() * 2)
        try:
            cache.incr(key)
        except ValueError:
            cache.set(key, 1, timeout=_window_seconds() * 2)
