"""Endpoints, their replicas and events, and the per-org usage ledger.

An endpoint is a state machine (``EndpointStatus``) driven by one replica at a time.
Each start bumps ``generation``; a replica only ever writes rows of the generation it was
started for, so a replica that outlived a stop/start (or a redelivered Celery message) cannot
flip a newer generation's state.

Where a replica runs (``Endpoint.hosting``):
  - ``own_process``: a dedicated endpoint, or a full fine-tune (its weights ARE the base):
    one Celery task on the endpoint's queue loads the model and serves only it;
  - ``shared_server``: a shared endpoint of a base model or of a LoRA fine-tune rides on the
    ``SharedServer`` of its base — one process, one copy of the base weights, every org's
    adapters hot in its LRU. Each hosted endpoint still gets its own ``Replica`` row
    (claimed, heartbeated and finished by the server), so routing, the watchdog and the
    events read the same for both kinds.
"""

from __future__ import annotations

from django.db import models

from longtune.api.ids import PublicIdField
from longtune.compute import queues
from longtune.events import OrgEvent
from longtune.tenancy.models import Organization
from longtune.tenancy.scoping import (
    OrgOwnedModelMixin,
    OrgScopedManager,
    OrgScopedQuerySet,
    org_scoped_manager,
)


class EndpointStatus(models.TextChoices):
    PENDING = "pending"  # waiting for a replica to pick it up
    LOADING = "loading"  # a replica is loading the base / adapter
    READY = "ready"  # serving
    STOPPED = "stopped"
    FAILED = "failed"


ACTIVE_ENDPOINT_STATUSES = (EndpointStatus.PENDING, EndpointStatus.LOADING, EndpointStatus.READY)


class Deployment(models.TextChoices):
    SHARED = "shared"  # the shared `inference` worker pool
    DEDICATED = "dedicated"  # the org's own `inference.<slug>` queue


class Hosting(models.TextChoices):
    OWN_PROCESS = "own_process"  # one serve_endpoint task for this endpoint alone
    SHARED_SERVER = "shared_server"  # an adapter (or the base) on its base's SharedServer


class ServerStatus(models.TextChoices):
    PENDING = "pending"  # queued: waiting for an inference worker
    LOADING = "loading"  # a worker is loading the base weights
    READY = "ready"  # serving; hosts the endpoints attached to it
    STOPPED = "stopped"  # idle shutdown, worker shutdown
    FAILED = "failed"


ACTIVE_SERVER_STATUSES = (ServerStatus.PENDING, ServerStatus.LOADING, ServerStatus.READY)


class SharedServer(models.Model):
    """The platform's shared serving process for one base model on one queue.

    Not org-owned: it hosts many orgs' endpoints. Tenant isolation does not depend on it —
    the gateway only routes an org's request to that org's own endpoints, and adapters are
    addressed by their globally unique fine-tuned model names. One row per (base, queue)
    for ever: a restart (watchdog, new endpoint after an idle stop) bumps ``generation``.
    """

    public_id = PublicIdField(prefix="srv_")
    base_model = models.ForeignKey(
        "catalog.BaseModel", on_delete=models.PROTECT, related_name="shared_servers"
    )
    queue = models.CharField(max_length=200, default=queues.INFERENCE)
    status = models.CharField(
        max_length=10, choices=ServerStatus.choices, default=ServerStatus.PENDING
    )
    generation = models.PositiveIntegerField(default=1)
    worker = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    internal_url = models.CharField(max_length=300, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True, help_text='{"code", "message"}')
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["base_model", "queue"], name="inference_one_shared_server_per_base"
            )
        ]

    def __str__(self) -> str:
        return f"{self.public_id} {self.base_model_id}@{self.queue} ({self.status})"


class EndpointQuerySet(OrgScopedQuerySet):
    def live(self) -> models.QuerySet:
        """Not deleted (DELETE keeps the row for the usage ledger's foreign keys)."""
        return self.filter(deleted_at__isnull=True)


class Endpoint(OrgOwnedModelMixin, models.Model):
    public_id = PublicIdField(prefix="ep_")
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="endpoints")
    created_by_key = models.ForeignKey(
        "tenancy.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    display_name = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=300, help_text="The model name clients send.")
    base_model = models.ForeignKey(
        "catalog.BaseModel", on_delete=models.PROTECT, related_name="endpoints"
    )
    fine_tuned_model = models.ForeignKey(
        "catalog.FineTunedModel",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="endpoints",
    )
    deployment = models.CharField(
        max_length=10, choices=Deployment.choices, default=Deployment.SHARED
    )
    queue = models.CharField(max_length=200, default=queues.INFERENCE)
    context_length = models.PositiveIntegerField(help_text="Longest prompt + completion served.")
    # The endpoint's own eval gate (POST /v1/endpoints min_passkey_accuracy), re-checked with the
    # org's gate whenever the endpoint is started again (evaluation.gate.ensure_deployable).
    min_passkey_accuracy = models.FloatField(null=True, blank=True)
    hosting = models.CharField(max_length=16, choices=Hosting.choices, default=Hosting.OWN_PROCESS)
    shared_server = models.ForeignKey(
        SharedServer, null=True, blank=True, on_delete=models.PROTECT, related_name="endpoints"
    )

    status = models.CharField(
        max_length=10, choices=EndpointStatus.choices, default=EndpointStatus.PENDING
    )
    stop_requested = models.BooleanField(default=False)
    generation = models.PositiveIntegerField(default=1)
    error = models.JSONField(null=True, blank=True, help_text='{"code", "message"}')

    created_at = models.DateTimeField(auto_now_add=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = org_scoped_manager(EndpointQuerySet)

    class Meta:
        ordering = ["pk"]
        indexes = [models.Index(fields=["org", "model", "status"])]

    def __str__(self) -> str:
        return f"{self.public_id} {self.model} ({self.status})"


class ReplicaStatus(models.TextChoices):
    LOADING = "loading"
    READY = "ready"
    STOPPED = "stopped"
    FAILED = "failed"


class Replica(OrgOwnedModelMixin, models.Model):
    """One endpoint generation being served: either its own Celery task on the endpoint's
    queue, or its slot on a SharedServer (``shared_server`` set). Either way ``internal_url``
    is a small HTTP server that only the gateway calls."""

    public_id = PublicIdField(prefix="rep_")
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="replicas")
    shared_server = models.ForeignKey(
        SharedServer, null=True, blank=True, on_delete=models.SET_NULL, related_name="replicas"
    )
    generation = models.PositiveIntegerField()
    worker = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    internal_url = models.CharField(max_length=300, blank=True)
    status = models.CharField(
        max_length=10, choices=ReplicaStatus.choices, default=ReplicaStatus.LOADING
    )
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    objects = OrgScopedManager()

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "generation"], name="inference_one_replica_per_generation"
            )
        ]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.status}) {self.internal_url}"


class EndpointEvent(OrgEvent):
    """An entry of an endpoint's event list (``GET /v1/endpoints/{id}/events``)."""

    public_id = PublicIdField(prefix="epevent-")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="events")

    class Meta(OrgEvent.Meta):
        indexes = [models.Index(fields=["endpoint", "id"])]


class UsageRecord(OrgOwnedModelMixin, models.Model):
    """One metered request: what billing sums (tokens) and what the endpoint page averages
    (TTFT, decode tokens/s). Rows survive the endpoint's deletion (``endpoint_ref``)."""

    public_id = PublicIdField(prefix="usage_")
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="usage_records")
    endpoint = models.ForeignKey(
        Endpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage"
    )
    endpoint_ref = models.CharField(max_length=64)
    api_key = models.ForeignKey(
        "tenancy.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    model = models.CharField(max_length=300)
    kind = models.CharField(max_length=20)  # "chat.completion" | "text_completion"
    request_id = models.CharField(max_length=100)
    stream = models.BooleanField(default=False)
    prompt_tokens = models.PositiveIntegerField()
    completion_tokens = models.PositiveIntegerField()
    ttft_ms = models.FloatField(null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = OrgScopedManager()

    class Meta:
        ordering = ["pk"]
        indexes = [
            models.Index(fields=["org", "created_at"]),
            models.Index(fields=["endpoint", "id"]),
        ]

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __str__(self) -> str:
        return f"{self.request_id} {self.model} {self.prompt_tokens}+{self.completion_tokens}"
