"""Dedicated instances, their events, their replicas' heartbeats and their instance-hours."""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

from longtune.api.ids import PublicIdField
from longtune.compute.models import DedicatedCapacity, Hosts
from longtune.events import EventLevel, OrgEvent
from longtune.provisioning.states import InstanceState
from longtune.tenancy.models import Organization
from longtune.tenancy.scoping import OrgOwnedModelMixin, OrgScopedManager

ACCELERATOR_TYPE_RE = r"^[a-z0-9][a-z0-9_]{0,39}$"  # "h100_80gb", "cpu"


class DedicatedInstance(OrgOwnedModelMixin, models.Model):
    """GPU capacity sold to one org: ``replicas`` workers of ``accelerators_per_replica`` x
    ``accelerator_type`` each, in ``pool``, under a contract. It owns ONE
    ``compute.DedicatedCapacity`` (the queue its workers consume); the services keep that
    row's flags in step with ``state``, which is all routing reads."""

    public_id = PublicIdField(prefix="di-")
    org = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="dedicated_instances"
    )
    capacity = models.OneToOneField(
        DedicatedCapacity, on_delete=models.PROTECT, related_name="instance"
    )
    name = models.CharField(max_length=100, blank=True)
    accelerator_type = models.CharField(
        max_length=40, validators=[RegexValidator(ACCELERATOR_TYPE_RE)], help_text="h100_80gb"
    )
    accelerators_per_replica = models.PositiveIntegerField(
        default=1, validators=[MinValueValidator(1)]
    )
    min_replicas = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    max_replicas = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    replicas = models.PositiveIntegerField(
        default=1, help_text="Replicas wanted now (between min and max)."
    )
    hosts = models.CharField(max_length=10, choices=Hosts.choices, default=Hosts.TRAINING)
    pool = models.CharField(max_length=64, help_text="Pool / region label, e.g. us-east-1.")
    contract_start = models.DateField()
    contract_end = models.DateField()
    hourly_price = models.DecimalField(
        max_digits=10, decimal_places=2, default=Decimal("0"), help_text="USD per instance-hour"
    )
    fallback_to_shared = models.BooleanField(
        default=False,
        help_text="While provisioning or draining, the org's new work runs on the shared pool "
        "instead of waiting for this instance.",
    )
    state = models.CharField(
        max_length=16, choices=InstanceState.choices, default=InstanceState.REQUESTED
    )
    failure_reason = models.TextField(blank=True)
    driver = models.CharField(max_length=32, blank=True, help_text="Set when provisioned.")
    driver_ref = models.CharField(max_length=255, blank=True, help_text="e.g. the Deployment.")

    created_at = models.DateTimeField(auto_now_add=True)
    provisioning_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    draining_at = models.DateTimeField(null=True, blank=True)
    decommissioned_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)

    objects = OrgScopedManager()

    class Meta:
        ordering = ["-pk"]
        permissions = [
            ("provision_dedicatedinstance", "Can provision a dedicated instance"),
            ("resize_dedicatedinstance", "Can resize a dedicated instance"),
            ("drain_dedicatedinstance", "Can drain a dedicated instance"),
            ("decommission_dedicatedinstance", "Can decommission a dedicated instance"),
            ("extend_contract_dedicatedinstance", "Can extend a dedicated instance's contract"),
            ("view_capacity", "Can view the accelerator capacity of the pools"),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} {self.size} x{self.replicas} ({self.state})"

    @property
    def size(self) -> str:
        """Per replica, the way sales quote it: ``1x_h100_80gb``."""
        return f"{self.accelerators_per_replica}x_{self.accelerator_type}"

    @property
    def queue(self) -> str:
        return self.capacity.queue

    @property
    def allocated_accelerators(self) -> int:
        """What the pool reserves for the contract: every replica it may scale to."""
        return self.accelerators_per_replica * self.max_replicas


class InstanceEvent(OrgEvent):
    """One entry of an instance's history (state changes, driver reports, health)."""

    public_id = PublicIdField(prefix="dievent-")
    instance = models.ForeignKey(DedicatedInstance, on_delete=models.CASCADE, related_name="events")
    level = models.CharField(max_length=10, choices=EventLevel.choices, default=EventLevel.INFO)
    from_state = models.CharField(max_length=16, blank=True)
    to_state = models.CharField(max_length=16, blank=True)
    actor = models.CharField(max_length=255, blank=True, help_text="Staff user or 'supervisor'.")

    class Meta(OrgEvent.Meta):
        indexes = [models.Index(fields=["instance", "id"])]


class ReplicaHeartbeat(OrgOwnedModelMixin, models.Model):
    """A worker of an instance saying it is alive (written by the worker itself every few
    seconds, workers/provisioning.py): health is the count of fresh rows, whatever the
    driver — a local process or a Kubernetes pod."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    instance = models.ForeignKey(
        DedicatedInstance, on_delete=models.CASCADE, related_name="heartbeats"
    )
    worker = models.CharField(max_length=255)  # the Celery worker's name (node@host)
    pid = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField()
    stopped = models.BooleanField(default=False)

    objects = OrgScopedManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["instance", "worker"], name="one_heartbeat_per_worker")
        ]


class InstanceUsage(OrgOwnedModelMixin, models.Model):
    """Instance-hours, one row per instance and clock hour it was ready in (``hours`` is the
    fraction of that hour, 1 for a full one). Idempotent: rewriting an hour updates its row.
    The billing outbox meters these rows once ``closed`` (``billing.sources``)."""

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    instance = models.ForeignKey(DedicatedInstance, on_delete=models.PROTECT, related_name="usage")
    hour_start = models.DateTimeField()
    hours = models.DecimalField(max_digits=8, decimal_places=6)
    hourly_price = models.DecimalField(max_digits=10, decimal_places=2)
    # The hour is over (or the instance ended inside it): ``hours`` is final. Billing meters
    # only closed rows, once each, so an hour still running is never billed short.
    closed = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = OrgScopedManager()

    class Meta:
        ordering = ["instance_id", "hour_start"]
        constraints = [
            models.UniqueConstraint(
                fields=["instance", "hour_start"], name="one_usage_row_per_hour"
            )
        ]

    @property
    def amount(self) -> Decimal:
        return (self.hours * self.hourly_price).quantize(Decimal("0.01"))
