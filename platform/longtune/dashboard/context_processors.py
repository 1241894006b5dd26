"""Exposes the org resolved by ``orgs.org_page`` to every template."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from longtune.dashboard.orgs import org_context


def dashboard(request: HttpRequest) -> dict[str, Any]:
    return org_context(request)
