"""Shared servers: one serving process per base model hosts every org's shared endpoints.

WHY: "many LoRA adapters share one copy of a base model". A shared endpoint of a base or of
a LoRA fine-tune does not get a process of its own; it is attached to the ``SharedServer`` of
its (base, queue). The server process (workers/inference.py ``serve_shared_base``) loads the
base once, then keeps claiming the pending endpoints attached to it exactly like an own
replica would (``claim_for_replica`` → adapter load → ``mark_ready``), heartbeats their
Replica rows, and finishes the ones whose endpoint was stopped. Routing and the replica
watchdog therefore need no special case.

Server rows follow the same generation discipline as endpoints: every (re)start bumps
``generation`` and a process only writes rows of the generation it claimed. ``started_at`` is
when the current generation was sent to its queue: a server still pending long after it, on
a queue that holds no message, lost its message and is restarted by the compute sweep
(``redispatch_lost_servers``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from longtune.catalog.models import BaseModel
from longtune.compute import broker, tasks
from longtune.inference.conf import inference_conf
from longtune.inference.events import record_event
from longtune.inference.models import (
    ACTIVE_ENDPOINT_STATUSES,
    ACTIVE_SERVER_STATUSES,
    Endpoint,
    EndpointStatus,
    ServerStatus,
    SharedServer,
)

logger = logging.getLogger("longtune.inference")


def _stale_before() -> Any:
    return timezone.now() - timedelta(seconds=inference_conf().stale_after_seconds)


def _is_lost(server: SharedServer) -> bool:
    """Loading/ready but silent for longer than the stale window: its worker died."""
    return server.status in (ServerStatus.LOADING, ServerStatus.READY) and (
        server.heartbeat_at is None or server.heartbeat_at < _stale_before()
    )


def _dispatch_after_commit(server: SharedServer) -> None:
    pk, generation, queue = server.pk, server.generation, server.queue

    def publish() -> None:
        try:
            broker.send(tasks.SERVE_SHARED_BASE, [pk, generation], queue)
        except Exception as exc:  # noqa: BLE001 - a broker error fails the server's endpoints
            logger.exception("could not enqueue shared server %s", pk)
            finish_server_by_pk(
                pk, generation, error={"code": "queue_unavailable", "message": type(exc).__name__}
            )

    transaction.on_commit(publish)


def ensure_shared_server(base: BaseModel, queue: str) -> SharedServer:
    """The (base, queue) server, started if it is not running. Call inside a transaction:
    the row lock orders this against the server's own idle stop."""
    server, _ = SharedServer.objects.get_or_create(base_model=base, queue=queue)
    server = SharedServer.objects.select_for_update().get(pk=server.pk)
    created = server.started_at is None and server.status == ServerStatus.PENDING
    if created:
        server.started_at = timezone.now()
        server.save(update_fields=["started_at"])
        _dispatch_after_commit(server)
        return server
    if server.status in ACTIVE_SERVER_STATUSES and not _is_lost(server):
        return server
    return _restart(server)


def _restart(server: SharedServer) -> SharedServer:
    """A new generation, pending, sent to its queue once the transaction commits (a message
    or process of the old generation is refused from then on)."""
    server.generation += 1
    server.status = ServerStatus.PENDING
    server.error = None
    server.internal_url = ""
    server.worker, server.pid = "", None
    server.started_at, server.stopped_at = timezone.now(), None
    server.save()
    _dispatch_after_commit(server)
    return server


# --------------------------------------------------------------------------- server side


def claim_server(server_pk: int, generation: int, worker: str, pid: int) -> SharedServer | None:
    """pending -> loading for exactly this generation; None for a stale/redelivered message."""
    claimed = SharedServer.objects.filter(
        pk=server_pk, generation=generation, status=ServerStatus.PENDING
    ).update(status=ServerStatus.LOADING, worker=worker, pid=pid, heartbeat_at=timezone.now())
    if not claimed:
        return None
    return SharedServer.objects.select_related("base_model").get(pk=server_pk)


def server_ready(server: SharedServer, internal_url: str) -> bool:
    return bool(
        SharedServer.objects.filter(
            pk=server.pk, generation=server.generation, status=ServerStatus.LOADING
        ).update(status=ServerStatus.READY, internal_url=internal_url, heartbeat_at=timezone.now())
    )


def server_heartbeat(server: SharedServer) -> bool:
    """False once the row moved on (restarted by the watchdog, stopped): the process exits."""
    return bool(
        SharedServer.objects.filter(
            pk=server.pk,
            generation=server.generation,
            status__in=(ServerStatus.LOADING, ServerStatus.READY),
        ).update(heartbeat_at=timezone.now())
    )


def pending_endpoints(server: SharedServer) -> list[tuple[int, int]]:
    """(pk, generation) of the endpoints waiting for this server, oldest first."""
    return list(
        Endpoint.objects.unscoped_across_orgs()
        .filter(
            shared_server=server,
            status=EndpointStatus.PENDING,
            stop_requested=False,
            deleted_at__isnull=True,
        )
        .order_by("pk")
        .values_list("pk", "generation")
    )


def stop_if_idle(server: SharedServer) -> bool:
    """Idle shutdown (frees the worker slot): only when no endpoint is attached and active.
    Locks the row, so an endpoint attaching at the same moment restarts it instead."""
    with transaction.atomic():
        locked = (
            SharedServer.objects.select_for_update()
            .filter(pk=server.pk, generation=server.generation, status=ServerStatus.READY)
            .first()
        )
        if locked is None:
            return True  # already moved on: exit anyway
        attached = Endpoint.objects.unscoped_across_orgs().filter(
            shared_server=server, status__in=ACTIVE_ENDPOINT_STATUSES, deleted_at__isnull=True
        )
        if attached.exists():
            return False
        locked.status, locked.stopped_at = ServerStatus.STOPPED, timezone.now()
        locked.save(update_fields=["status", "stopped_at"])
    return True


def finish_server(server: SharedServer, *, error: dict[str, str] | None = None) -> None:
    finish_server_by_pk(server.pk, server.generation, error=error)


def finish_server_by_pk(pk: int, generation: int, *, error: dict[str, str] | None = None) -> None:
    """The server process exits (or could not be queued). Endpoints still waiting for it
    fail with the server's error, or stop when it shut down cleanly — never left pending
    for a process that is gone. (Endpoints it served finish through their replicas.)"""
    now = timezone.now()
    with transaction.atomic():
        moved = SharedServer.objects.filter(
            pk=pk, generation=generation, status__in=ACTIVE_SERVER_STATUSES
        ).update(
            status=ServerStatus.FAILED if error else ServerStatus.STOPPED,
            error=error,
            stopped_at=now,
        )
        if not moved:
            return
        waiting = (
            Endpoint.objects.unscoped_across_orgs()
            .select_for_update()
            .filter(shared_server_id=pk, status=EndpointStatus.PENDING)
        )
        for endpoint in waiting:
            if error:
                endpoint.status, endpoint.stopped_at = EndpointStatus.FAILED, now
                endpoint.error = {"code": "replica_failed", "message": error["message"]}
                endpoint.save(update_fields=["status", "stopped_at", "error"])
                record_event(
                    endpoint,
                    f"Replica failed: the shared server could not start: {error['message']}",
                    level="error",
                )
            else:
                endpoint.status, endpoint.stopped_at = EndpointStatus.STOPPED, now
                endpoint.save(update_fields=["status", "stopped_at"])
                record_event(endpoint, "Endpoint stopped: its shared server shut down.")


def recover_lost_servers() -> list[str]:
    """Watchdog: a loading/ready server that stopped heartbeating restarts (new generation)
    when endpoints still wait for it, else it is marked failed. Run after
    ``recover_lost_replicas``, which moves the endpoints it served back to pending."""
    acted = []
    stale = SharedServer.objects.filter(
        status__in=(ServerStatus.LOADING, ServerStatus.READY), heartbeat_at__lt=_stale_before()
    )
    for candidate in stale:
        with transaction.atomic():
            server = SharedServer.objects.select_for_update().get(pk=candidate.pk)
            if not _is_lost(server):
                continue
            acted.append(server.public_id)
            waiting = Endpoint.objects.unscoped_across_orgs().filter(
                shared_server=server, status=EndpointStatus.PENDING, deleted_at__isnull=True
            )
            if waiting.exists():
                ensure_shared_server(server.base_model, server.queue)
            else:
                server.status, server.stopped_at = ServerStatus.FAILED, timezone.now()
                server.error = {"code": "server_lost", "message": "no heartbeat"}
                server.save(update_fields=["status", "stopped_at", "error"])
    return acted


def redispatch_lost_servers(
    older_than: timedelta, queue_is_idle: Callable[[str], bool]
) -> list[str]:
    """Compute sweep: a server still pending ``older_than`` after it was sent, whose queue
    holds no message, lost its message; restart it as a new generation (the lost message is
    refused if it ever arrives). Its waiting endpoints say so in their events."""
    cutoff = timezone.now() - older_than
    candidates = list(
        SharedServer.objects.filter(status=ServerStatus.PENDING, started_at__lt=cutoff)
    )
    idle = {queue for queue in {c.queue for c in candidates} if queue_is_idle(queue)}
    acted = []
    for candidate in candidates:
        if candidate.queue not in idle:
            continue  # its message may be waiting behind other work
        with transaction.atomic():
            server = SharedServer.objects.select_for_update().get(pk=candidate.pk)
            if server.status != ServerStatus.PENDING or server.generation != candidate.generation:
                continue  # claimed or restarted meanwhile
            lost = server.generation
            _restart(server)
            acted.append(server.public_id)
            logger.warning("shared server %s: message lost, restarted", server.public_id)
            waiting = Endpoint.objects.unscoped_across_orgs().filter(
                shared_server=server, status=EndpointStatus.PENDING, deleted_at__isnull=True
            )
            for endpoint in waiting:
                record_event(
                    endpoint,
                    f"Shared server {server.public_id} was not picked up (its start message "
                    f"was lost); restarting it as generation {server.generation}.",
                    level="warn",
                    data={"lost_generation": lost, "generation": server.generation},
                )
    return acted
