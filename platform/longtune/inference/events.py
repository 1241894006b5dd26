"""Writing endpoint events (the stream ``GET /v1/endpoints/{id}/events`` reads).

Its own module so the endpoint services and the shared-server bookkeeping, which call each
other's work, both write events without importing each other for it.
"""

from __future__ import annotations

from typing import Any

from longtune.inference.models import Endpoint, EndpointEvent


def record_event(
    endpoint: Endpoint, message: str, *, level: str = "info", data: dict[str, Any] | None = None
) -> EndpointEvent:
    return EndpointEvent.objects.create(
        org_id=endpoint.org_id, endpoint=endpoint, level=level, message=message, data=data
    )
