"""Endpoint lifecycle (API side and replica side), hosting and usage metering. Which model a
name means (and whether it is served as an adapter) is the catalog's: ``longtune.catalog``.

Every state write a replica makes is conditional on ``(endpoint, generation)``: a stop, a
restart or a redelivered Celery message can never let an old replica overwrite a newer one.
Replicas are started by task NAME (``compute.tasks.SERVE_ENDPOINT``) so the web process never
imports torch; the endpoint's queue comes from ``compute.queues.serving_queue_for``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Avg, Count, F, Q
from django.utils import timezone

from longtune.api.errors import ApiError
from longtune.billing.guard import ensure_billable
from longtune.catalog.models import FineTunedModel
from longtune.catalog.resolution import ResolvedModel, resolve_model, serves_as_adapter
from longtune.compute import broker, tasks
from longtune.compute.queues import serving_queue_for
from longtune.evaluation.gate import ensure_deployable
from longtune.inference import routing, token_meter
from longtune.inference.conf import inference_conf
from longtune.inference.events import record_event
from longtune.inference.models import (
    ACTIVE_ENDPOINT_STATUSES,
    Deployment,
    Endpoint,
    EndpointStatus,
    Hosting,
    Replica,
    ReplicaStatus,
    SharedServer,
    UsageRecord,
)
from longtune.inference.quotas import active_endpoint_count
from longtune.inference.routing import Route
from longtune.inference.shared_servers import ensure_shared_server
from longtune.tenancy.models import Organization
from longtune.tenancy.quotas import reserve_quota

logger = logging.getLogger("longtune.inference")

LIVE_REPLICA_STATUSES = (ReplicaStatus.LOADING, ReplicaStatus.READY)


# --------------------------------------------------------------------------- hosting


def hosting_for(resolved: ResolvedModel, deployment: str) -> str:
    """Shared endpoints of a base or a LoRA fine-tune ride on their base's shared server;
    dedicated endpoints and full fine-tunes (whose weights are not the base's) get a process."""
    if deployment == Deployment.SHARED and resolved.runs_on_base_weights:
        return Hosting.SHARED_SERVER
    return Hosting.OWN_PROCESS


# --------------------------------------------------------------------------- API side


def _dispatch_after_commit(endpoint: Endpoint) -> None:
    """Get the endpoint's (new) generation served: a shared-server endpoint just needs its
    server running (the server claims pending endpoints itself); an own-process endpoint
    gets a serve task once this transaction commits."""
    if endpoint.hosting == Hosting.SHARED_SERVER:
        server = ensure_shared_server(endpoint.base_model, endpoint.queue)
        if endpoint.shared_server_id != server.pk:
            endpoint.shared_server = server
            endpoint.save(update_fields=["shared_server"])
        return
    pk, generation, queue = endpoint.pk, endpoint.generation, endpoint.queue

    def publish() -> None:
        try:
            broker.send(tasks.SERVE_ENDPOINT, [pk, generation], queue)
        except Exception as exc:  # noqa: BLE001 - any broker error becomes a failed endpoint
            logger.exception("could not enqueue endpoint %s", pk)
            moved = Endpoint.objects.unscoped_across_orgs().filter(
                pk=pk, generation=generation, status=EndpointStatus.PENDING
            )
            error = {"code": "queue_unavailable", "message": type(exc).__name__}
            if moved.update(status=EndpointStatus.FAILED, error=error):
                record_event(
                    Endpoint.objects.unscoped_across_orgs().get(pk=pk),
                    "The endpoint could not be queued.",
                    level="error",
                )

    transaction.on_commit(publish)


def endpoint_using(model: FineTunedModel) -> str | None:
    """The catalog's in-use check: a fine-tuned model cannot be deleted while an endpoint
    (even a stopped one, which could be started again) is attached to it."""
    endpoint = Endpoint.objects.for_org(model.org).live().filter(fine_tuned_model=model).first()
    if endpoint is None:
        return None
    return f"endpoint {endpoint.public_id} is attached to it; delete the endpoint first."


def create_endpoint(
    *,
    org: Organization,
    model_name: str,
    deployment: str,
    display_name: str,
    api_key: Any,
    min_passkey_accuracy: float | None = None,
) -> Endpoint:
    resolved = resolve_model(org, model_name)
    ensure_deployable(org, resolved, min_passkey_accuracy)  # the eval gate (endpoint + org)
    queue = serving_queue_for(org, deployment)
    hosting = hosting_for(resolved, deployment)
    with reserve_quota(org) as reservation:
        ensure_billable(reservation.org)  # 402 billing_suspended / budget_exceeded
        reservation.check("max_endpoints", used=active_endpoint_count(org), requested=1)
        server = (
            ensure_shared_server(resolved.base, queue) if hosting == Hosting.SHARED_SERVER else None
        )
        endpoint = Endpoint.objects.create(
            hosting=hosting,
            shared_server=server,
            org=org,
            created_by_key=api_key,
            display_name=display_name,
            model=resolved.name,
            base_model=resolved.base,
            fine_tuned_model=resolved.fine_tuned,
            deployment=deployment,
            queue=queue,
            context_length=resolved.context_length,
            min_passkey_accuracy=min_passkey_accuracy,
        )
        if server is not None:
            record_event(
                endpoint,
                f"Endpoint created for {resolved.name}; served by shared server "
                f"{server.public_id} ({resolved.base.name} on {queue}).",
            )
        else:
            record_event(endpoint, f"Endpoint created for {resolved.name}; queued on {queue}.")
            _dispatch_after_commit(endpoint)
    return endpoint


def _locked(endpoint: Endpoint) -> Endpoint:
    return Endpoint.objects.for_org(endpoint.org).select_for_update().get(pk=endpoint.pk)


def start_endpoint(endpoint: Endpoint) -> Endpoint:
    """stopped/failed -> pending with a new generation (and a new replica); no-op otherwise.
    Counts against ``max_endpoints`` like a create (the org row lock orders the two), and
    passes the eval gate like a create: the model may have been re-evaluated, or the org's
    gate raised, since the endpoint was created."""
    if endpoint.status not in ACTIVE_ENDPOINT_STATUSES:
        resolved = resolve_model(endpoint.org, endpoint.model)
        ensure_deployable(endpoint.org, resolved, endpoint.min_passkey_accuracy)
    with reserve_quota(endpoint.org) as reservation:
        locked = _locked(endpoint)
        if locked.status in ACTIVE_ENDPOINT_STATUSES and not locked.stop_requested:
            return locked
        if locked.status in ACTIVE_ENDPOINT_STATUSES:  # stop requested but not finished yet
            raise ApiError(
                status=409,
                code="endpoint_stopping",
                message="The endpoint is still stopping; start it again once it is stopped.",
            )
        ensure_billable(reservation.org)  # 402 billing_suspended / budget_exceeded
        reservation.check("max_endpoints", used=active_endpoint_count(endpoint.org), requested=1)
        locked.generation += 1
        locked.status = EndpointStatus.PENDING
        locked.stop_requested = False
        locked.error = None
        locked.ready_at = locked.stopped_at = None
        locked.save()
        record_event(locked, f"Start requested (generation {locked.generation}).")
        _dispatch_after_commit(locked)
    return locked


def reroute_pending(queue: str) -> list[str]:
    """Own-process endpoints still pending on ``queue`` (a decommissioned dedicated
    instance's) move to where ``serving_queue_for`` now points, as a new generation (the old
    message is refused if it ever turns up). Registered with ``compute.sweep``."""
    moved: list[str] = []
    with transaction.atomic():
        pending = (
            Endpoint.objects.unscoped_across_orgs()
            .select_for_update()
            .select_related("org")
            .filter(queue=queue, status=EndpointStatus.PENDING, hosting=Hosting.OWN_PROCESS)
            .order_by("pk")
        )
        for endpoint in pending:
            target = serving_queue_for(endpoint.org, endpoint.deployment)
            if target == queue:
                continue
            endpoint.queue = target
            endpoint.generation += 1
            endpoint.save(update_fields=["queue", "generation"])
            record_event(
                endpoint,
                f"Queue {queue} has no machines any more; moved to {target} "
                f"(generation {endpoint.generation}).",
                level="warn",
            )
            _dispatch_after_commit(endpoint)
            moved.append(endpoint.public_id)
    return moved


def move_live_off(queue: str) -> list[str]:
    """Own-process endpoints served on ``queue`` (a draining dedicated instance's) restart
    where ``serving_queue_for`` now points, as a new generation: the old replica sees the
    generation change on its next heartbeat and exits, so the worker's drain can finish.
    Registered with ``compute.sweep.register_drain``."""
    moved: list[str] = []
    with transaction.atomic():
        live = (
            Endpoint.objects.unscoped_across_orgs()
            .select_for_update()
            .select_related("org")
            .filter(
                queue=queue,
                hosting=Hosting.OWN_PROCESS,
                status__in=(EndpointStatus.LOADING, EndpointStatus.READY),
                stop_requested=False,
            )
            .order_by("pk")
        )
        for endpoint in live:
            endpoint.queue = serving_queue_for(endpoint.org, endpoint.deployment)
            endpoint.generation += 1
            endpoint.status = EndpointStatus.PENDING
            endpoint.ready_at = None
            endpoint.save(update_fields=["queue", "generation", "status", "ready_at"])
            record_event(
                endpoint,
                f"Queue {queue} is draining; restarting on {endpoint.queue} "
                f"(generation {endpoint.generation}).",
                level="warn",
            )
            _dispatch_after_commit(endpoint)
            moved.append(endpoint.public_id)
    return moved


def stop_endpoint(endpoint: Endpoint, *, reason: str = "Stop requested.") -> Endpoint:
    """A pending endpoint stops at once; a loading/ready one when its replica sees the flag."""
    with transaction.atomic():
        locked = _locked(endpoint)
        if locked.status not in ACTIVE_ENDPOINT_STATUSES or locked.stop_requested:
            return locked
        locked.stop_requested = True
        if locked.status == EndpointStatus.PENDING:
            locked.status = EndpointStatus.STOPPED
            locked.stopped_at = timezone.now()
        locked.save()
        record_event(locked, reason)
    return locked


def delete_endpoint(endpoint: Endpoint) -> None:
    """Stop it and hide it; the row stays so usage records keep their endpoint."""
    stop_endpoint(endpoint, reason="Endpoint deleted.")
    Endpoint.objects.for_org(endpoint.org).filter(pk=endpoint.pk).update(deleted_at=timezone.now())


# --------------------------------------------------------------------------- replica side


def claim_for_replica(
    endpoint_pk: int,
    generation: int,
    worker: str,
    pid: int,
    *,
    shared_server: SharedServer | None = None,
) -> tuple[Endpoint, Replica] | None:
    """pending -> loading for exactly this generation, with its replica row; None if stale.
    A shared server claims with itself as ``shared_server`` (only its own endpoints)."""
    with transaction.atomic():
        endpoint = (
            Endpoint.objects.unscoped_across_orgs()
            .select_for_update(of=("self",))
            .select_related("org", "base_model", "fine_tuned_model")
            .filter(pk=endpoint_pk, generation=generation)
            .first()
        )
        if endpoint is None or endpoint.status != EndpointStatus.PENDING:
            return None
        if endpoint.stop_requested or endpoint.deleted_at is not None:
            return None
        if shared_server is not None and endpoint.shared_server_id != shared_server.pk:
            return None
        endpoint.status = EndpointStatus.LOADING
        endpoint.save(update_fields=["status"])
        replica = Replica.objects.create(
            org_id=endpoint.org_id,
            endpoint=endpoint,
            shared_server=shared_server,
            generation=generation,
            worker=worker,
            pid=pid,
            heartbeat_at=timezone.now(),
        )
        where = f"shared server {shared_server.public_id} on " if shared_server else ""
        record_event(endpoint, f"Replica {replica.public_id} loading on {where}{worker}.")
    return endpoint, replica


def mark_ready(replica: Replica, internal_url: str, details: dict[str, Any]) -> bool:
    with transaction.atomic():
        moved = Endpoint.objects.unscoped_across_orgs().filter(
            pk=replica.endpoint_id,
            generation=replica.generation,
            status=EndpointStatus.LOADING,
            stop_requested=False,
        )
        if not moved.update(status=EndpointStatus.READY, ready_at=timezone.now()):
            return False
        Replica.objects.unscoped_across_orgs().filter(pk=replica.pk).update(
            status=ReplicaStatus.READY, internal_url=internal_url, heartbeat_at=timezone.now()
        )
        record_event(replica.endpoint, "Endpoint ready.", data=details)
    return True


def replica_heartbeat(replica: Replica) -> bool:
    """Heartbeat; False when the replica should exit (stop requested, deleted, restarted, or
    declared lost by the watchdog)."""
    alive = Replica.objects.unscoped_across_orgs().filter(
        pk=replica.pk, status__in=LIVE_REPLICA_STATUSES
    )
    if not alive.update(heartbeat_at=timezone.now()):
        return False
    return (
        Endpoint.objects.unscoped_across_orgs()
        .filter(
            pk=replica.endpoint_id,
            generation=replica.generation,
            stop_requested=False,
            deleted_at__isnull=True,
            status__in=(EndpointStatus.LOADING, EndpointStatus.READY),
        )
        .exists()
    )


def finish_replica(replica: Replica, *, error: dict[str, str] | None = None) -> None:
    """The replica exits: its endpoint becomes stopped (or failed with ``error``). A replica
    the watchdog already declared lost changes nothing."""
    now = timezone.now()
    status = EndpointStatus.FAILED if error else EndpointStatus.STOPPED
    with transaction.atomic():
        was_live = Replica.objects.unscoped_across_orgs().filter(
            pk=replica.pk, status__in=LIVE_REPLICA_STATUSES
        )
        if not was_live.update(
            status=ReplicaStatus.FAILED if error else ReplicaStatus.STOPPED, stopped_at=now
        ):
            return
        moved = Endpoint.objects.unscoped_across_orgs().filter(
            pk=replica.endpoint_id,
            generation=replica.generation,
            status__in=(EndpointStatus.LOADING, EndpointStatus.READY),
        )
        if moved.update(status=status, error=error, stopped_at=now):
            message = f"Replica failed: {error['message']}" if error else "Endpoint stopped."
            record_event(replica.endpoint, message, level="error" if error else "info")


def recover_lost_replicas() -> list[str]:
    """Watchdog: a loading/ready endpoint whose replica stopped heartbeating (its worker
    died) gets a new generation and a new replica on its queue; a stopping one is just
    stopped. Returns the public ids acted on. Cross-tenant by nature (a periodic sweep)."""
    stale_before = timezone.now() - timedelta(seconds=inference_conf().stale_after_seconds)
    acted = []
    lost = Replica.objects.unscoped_across_orgs().filter(
        status__in=LIVE_REPLICA_STATUSES, heartbeat_at__lt=stale_before
    )
    for replica in lost.select_related("endpoint"):
        with transaction.atomic():
            if (
                not Replica.objects.unscoped_across_orgs()
                .filter(
                    pk=replica.pk, status__in=LIVE_REPLICA_STATUSES, heartbeat_at__lt=stale_before
                )
                .update(status=ReplicaStatus.FAILED, stopped_at=timezone.now())
            ):
                continue  # it heartbeated or exited meanwhile
            endpoint = _locked(replica.endpoint)
            if endpoint.generation != replica.generation or endpoint.status not in (
                EndpointStatus.LOADING,
                EndpointStatus.READY,
            ):
                continue
            acted.append(endpoint.public_id)
            if endpoint.stop_requested or endpoint.deleted_at is not None:
                endpoint.status, endpoint.stopped_at = EndpointStatus.STOPPED, timezone.now()
                endpoint.save()
                record_event(endpoint, "Replica lost while stopping; endpoint stopped.")
                continue
            endpoint.generation += 1
            endpoint.status = EndpointStatus.PENDING
            endpoint.ready_at = None
            endpoint.save()
            record_event(
                endpoint,
                f"Replica {replica.public_id} lost (no heartbeat since "
                f"{replica.heartbeat_at:%H:%M:%S}); starting generation {endpoint.generation}.",
                level="warn",
            )
            _dispatch_after_commit(endpoint)
    return acted


# --------------------------------------------------------------------------- gateway side


def route_for(org: Organization, model_name: str) -> Route:
    """The org's ready endpoint for ``model_name`` with a live replica, or a coded 4xx/503.

    The gateway's hot path: a route this process resolved before is re-checked with one
    query (``routing.is_live``) instead of resolved again (inference/routing.py)."""
    conf = inference_conf()
    fresh_after = routing.fresh_after(conf.stale_after_seconds, timezone.now())
    cached = routing.ROUTES.get(org, model_name)
    if cached is not None:
        if routing.is_live(org, cached, fresh_after):
            return cached
        routing.ROUTES.forget(org, model_name)
    route = resolve_route(org, model_name, fresh_after)
    routing.ROUTES.put(org, model_name, route, conf.route_cache_seconds)
    return route


def resolve_route(org: Organization, model_name: str, fresh_after: datetime) -> Route:
    """``route_for`` from the database alone: the catalog's answer for the name, then the
    freshest ready replica of the current generation of a ready endpoint for it."""
    resolved = resolve_model(org, model_name)
    endpoints = Endpoint.objects.for_org(org).live().filter(model=resolved.name)
    replica = (
        Replica.objects.for_org(org)
        .filter(
            endpoint__in=endpoints.filter(status=EndpointStatus.READY),
            generation=F("endpoint__generation"),
            status=ReplicaStatus.READY,
            heartbeat_at__gte=fresh_after,
        )
        .select_related("endpoint__fine_tuned_model")
        .order_by("-heartbeat_at")
        .first()
    )
    if replica is not None:
        endpoint = replica.endpoint
        return Route(
            endpoint_pk=endpoint.pk,
            endpoint_public_id=endpoint.public_id,
            model=resolved.name,
            context_length=endpoint.context_length,
            adapter=resolved.name if serves_as_adapter(endpoint.fine_tuned_model) else None,
            internal_url=replica.internal_url,
            replica_pk=replica.pk,
        )
    if endpoints.filter(status__in=ACTIVE_ENDPOINT_STATUSES).exists():
        raise ApiError(
            status=503,
            code="endpoint_not_ready",
            message=f"The endpoint serving '{model_name}' is not ready yet; retry shortly.",
            headers={"Retry-After": "5"},
        )
    raise ApiError(
        status=404,
        code="model_not_deployed",
        message=f"'{model_name}' has no running endpoint. Create one with POST /v1/endpoints.",
        param="model",
    )


@dataclass(frozen=True)
class Metered:
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None
    tokens_per_second: float | None


def record_usage(
    *,
    org: Organization,
    route: Route,
    api_key: Any,
    kind: str,
    request_id: str,
    stream: bool,
    metered: Metered,
) -> UsageRecord:
    """The usage row (the ledger of record), then the org's month counter (token_meter)."""
    record = UsageRecord.objects.create(
        org=org,
        endpoint_id=route.endpoint_pk,
        endpoint_ref=route.endpoint_public_id,
        api_key=api_key,
        model=route.model,
        kind=kind,
        request_id=request_id,
        stream=stream,
        prompt_tokens=metered.prompt_tokens,
        completion_tokens=metered.completion_tokens,
        ttft_ms=metered.ttft_ms,
        tokens_per_second=metered.tokens_per_second,
    )
    # Right after the row, not on commit: the gateway meters in autocommit, and a row rolled
    # back inside some caller's transaction is at most over-counted until the counter expires.
    token_meter.add(org, metered.prompt_tokens + metered.completion_tokens, record.created_at)
    return record


def endpoint_stats(endpoint: Endpoint) -> dict[str, Any]:
    """Averages over the endpoint's most recent requests (``stats_window``)."""
    window = inference_conf().stats_window
    recent_ids = list(
        UsageRecord.objects.for_org(endpoint.org)
        .filter(endpoint=endpoint)
        .order_by("-pk")
        .values_list("pk", flat=True)[:window]
    )
    agg = (
        UsageRecord.objects.for_org(endpoint.org)
        .filter(pk__in=recent_ids)
        .aggregate(
            requests=Count("pk"),
            avg_ttft_ms=Avg("ttft_ms"),
            avg_tokens_per_second=Avg(
                "tokens_per_second", filter=Q(tokens_per_second__isnull=False)
            ),
        )
    )
    return {
        "window": window,
        "requests": agg["requests"],
        "avg_ttft_ms": _round(agg["avg_ttft_ms"]),
        "avg_tokens_per_second": _round(agg["avg_tokens_per_second"]),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)
