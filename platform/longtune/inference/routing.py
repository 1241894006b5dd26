"""The gateway's routes (model name -> live replica), cached per process, re-checked per request.

Why: resolving a route from scratch is four ORM queries (the catalog's ``resolve_model``: the
org's fine-tuned models, then the visible base models; the replica joined with its endpoint
and model) and was ~55% of the gateway's CPU per request at 200 concurrent streams
(benchmarks/gateway_load.py). What a route *is* never changes for one replica: an endpoint's
model, adapter and context are fixed when it is created, a replica's URL when it becomes
ready. What changes is whether that replica may still be used. So a process keeps the routes
it resolved, and each request re-checks only that, with one primary-key query (``is_live``):
the replica is still ``ready``, of its endpoint's current generation, its heartbeat fresh, and
the endpoint ``ready`` and not deleted — the same conditions ``services.route_for`` queries.

Why a re-check and not an invalidation message (Redis pub/sub, a version key bumped on every
change): the check reads the committed rows themselves, so every way a route can end — the
endpoint stopped, deleted or restarted as a new generation, the replica finished, declared
lost by the watchdog or silent past ``stale_after_seconds`` — ends routing at once, in every
process, with no writer having to remember to announce it, no message lost while a subscriber
reconnects, no lock taken inside the writers' transactions, and on the embedded default too
(which has no Redis). It costs one indexed query, the same round-trip a version read would.

What the re-check cannot see, and what bounds it:

- **which model a name means** (``resolve_model``: a base model's visibility edited by staff):
  an entry lives at most ``route_cache_seconds`` (0 turns the cache off);
- **a replica that died without saying so**: its row still looks live until the heartbeat goes
  stale (the uncached query has the same blind spot). A connection failure to it ``forget``s
  the entry, so the next request resolves from the database again.

Only routes are cached, never a 404/503: a missing route is always asked of the database.
Entries are keyed by the org's pk *and* public id, so a test database that reuses a
rolled-back pk can never meet another org's entry.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection

from longtune.inference.models import Endpoint, EndpointStatus, Replica, ReplicaStatus
from longtune.tenancy.models import Organization

MAX_ENTRIES = 10_000  # routes one process keeps (least recently used dropped beyond)


@dataclass(frozen=True)
class Route:
    """Where one model of one org is served now: what the gateway needs to proxy a request."""

    endpoint_pk: int
    endpoint_public_id: str
    model: str
    context_length: int
    adapter: str | None
    internal_url: str
    replica_pk: int = 0  # the replica behind internal_url (what ``is_live`` re-checks)


@dataclass(frozen=True)
class _Entry:
    route: Route
    expires_at: float  # time.monotonic()


# --------------------------------------------------------------------------- the re-check

_REPLICA, _ENDPOINT = Replica._meta.db_table, Endpoint._meta.db_table
# One primary-key lookup, joined with its endpoint: the conditions of services.route_for for
# this one replica. Raw on purpose: the ORM spends longer compiling this than the database
# spends answering it, and it runs on every gateway request. Scoped by org_id explicitly.
_LIVE_SQL = (
    f"SELECT 1 FROM {_REPLICA} r JOIN {_ENDPOINT} e ON e.id = r.endpoint_id "  # noqa: S608
    "WHERE r.id = %s AND r.org_id = %s AND e.id = %s AND r.status = %s "
    "AND r.generation = e.generation AND r.heartbeat_at >= %s "
    "AND e.status = %s AND e.deleted_at IS NULL"
)


def is_live(org: Organization, route: Route, fresh_after: datetime) -> bool:
    """True while ``route``'s replica may still serve: exactly what ``route_for`` would find."""
    with connection.cursor() as cursor:
        cursor.execute(
            _LIVE_SQL,
            [
                route.replica_pk,
                org.pk,
                route.endpoint_pk,
                ReplicaStatus.READY.value,
                connection.ops.adapt_datetimefield_value(fresh_after),  # SQLite: its text form
                EndpointStatus.READY.value,
            ],
        )
        return cursor.fetchone() is not None


def fresh_after(stale_after_seconds: int, now: datetime) -> datetime:
    """The oldest heartbeat a routable replica may have."""
    return now - timedelta(seconds=stale_after_seconds)


# --------------------------------------------------------------------------- the cache


class RouteCache:
    """A bounded LRU of routes keyed by (org pk, org public id, model name). Thread-safe: the
    gateway resolves routes on ``sync_to_async`` threads, one per request."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: OrderedDict[tuple[int, str, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._max_entries = max_entries

    @staticmethod
    def _key(org: Organization, model_name: str) -> tuple[int, str, str]:
        return (org.pk, org.public_id, model_name)

    def get(self, org: Organization, model_name: str) -> Route | None:
        """The cached route, unless it is older than its bound (then it is dropped)."""
        key = self._key(org, model_name)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if time.monotonic() >= entry.expires_at:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry.route

    def put(self, org: Organization, model_name: str, route: Route, max_age_seconds: float) -> None:
        if max_age_seconds <= 0:
            return
        key = self._key(org, model_name)
        entry = _Entry(route=route, expires_at=time.monotonic() + max_age_seconds)
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def forget(self, org: Organization, model_name: str) -> None:
        with self._lock:
            self._entries.pop(self._key(org, model_name), None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


ROUTES = RouteCache()


def forget(org: Organization, model_name: str) -> None:
    """The cached replica did not answer: the next request asks the database."""
    ROUTES.forget(org, model_name)
