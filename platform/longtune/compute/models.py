"""Dedicated capacity, and the fields every kind of GPU work shares.

``DedicatedCapacity`` is the one model of "this org has machines of its own": what they host
(training, serving or both) and the queue they consume. Routing (``compute.queues``) reads
it; the dedicated-instances feature hangs its ``DedicatedInstance`` rows on it.

``GpuWork`` is abstract (no table): a model that inherits it (fine-tuning jobs today,
evaluation jobs next) gets the fields ``compute.lifecycle.GpuWorkLifecycle`` reads and
writes — queue, attempt (the fence), heartbeat, progress, cancel flag, error, timestamps.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from longtune.compute import queues
from longtune.tenancy.models import Organization
from longtune.tenancy.scoping import OrgOwnedModelMixin, OrgScopedManager

DEDICATED_QUEUE_RE = r"^(gpu|inference)\.[A-Za-z0-9_-]+(\.[A-Za-z0-9_.-]+)?$"


class Hosts(models.TextChoices):
    TRAINING = queues.TRAINING
    SERVING = queues.SERVING
    BOTH = queues.BOTH


class DedicatedCapacity(OrgOwnedModelMixin, models.Model):
    """Machines reserved for one org, reached through their own Celery queue.

    Staff create it in the admin (previously ``OrgFinetuningSettings.dedicated_queue``). A
    blank queue gets the conventional name (``gpu.<slug>``, ``inference.<slug>``); a given
    one must stay in the org's namespace. Deactivating it sends new work back to the shared
    pool (unless ``hold_while_inactive``: then it waits here); work already queued keeps its
    queue. A ``provisioning.DedicatedInstance`` owns one row and sets both flags from its
    state.
    """

    org = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="dedicated_capacity"
    )
    hosts = models.CharField(max_length=10, choices=Hosts.choices, default=Hosts.TRAINING)
    queue = models.CharField(
        max_length=200,
        unique=True,
        blank=True,
        validators=[RegexValidator(DEDICATED_QUEUE_RE)],
        help_text="Blank: gpu.<org-slug> (training, both) or inference.<org-slug> (serving).",
    )
    active = models.BooleanField(default=True)
    # A dedicated instance that is provisioning or draining, whose contract does not allow
    # falling back to the shared pool: its org's new work waits on this queue for its
    # machines instead of running elsewhere (compute.queues.dedicated_capacity_for).
    hold_while_inactive = models.BooleanField(
        default=False,
        help_text="While inactive, new work still queues here and waits for the machines "
        "(instead of going to the shared pool).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgScopedManager()

    class Meta:
        ordering = ["org_id", "pk"]
        verbose_name_plural = "dedicated capacity"

    def __str__(self) -> str:
        return f"{self.queue} ({self.hosts}{'' if self.active else ', inactive'})"

    def _fill_queue(self) -> None:
        if not self.queue and self.org_id is not None:
            self.queue = queues.dedicated_queue_name(self.org.slug, self.hosts)

    def clean(self) -> None:
        self._fill_queue()
        if self.org_id is None:
            return
        if not queues.queue_belongs_to(self.queue, self.org.slug):
            raise ValidationError(
                {"queue": f"A dedicated queue of {self.org.slug} must be named "
                 f"gpu.{self.org.slug}[.<name>] or inference.{self.org.slug}[.<name>]."}
            )  # fmt: skip
        if self.active or self.hold_while_inactive:
            overlapping = (
                DedicatedCapacity.objects.for_org(self.org)
                .filter(models.Q(active=True) | models.Q(hold_while_inactive=True))
                .exclude(pk=self.pk)
                .filter(
                    hosts__in=[Hosts.TRAINING, Hosts.SERVING, Hosts.BOTH]
                    if self.hosts == Hosts.BOTH
                    else [self.hosts, Hosts.BOTH]
                )
            )
            if overlapping.exists():
                raise ValidationError(
                    {"hosts": "The organization already has active capacity hosting this work; "
                     "deactivate it first."}
                )  # fmt: skip

    def save(self, *args: Any, **kwargs: Any) -> None:
        self._fill_queue()
        super().save(*args, **kwargs)


class WorkStatus(models.TextChoices):
    """The lifecycle's states; a concrete model may add states before ``queued`` (fine-tuning
    jobs start in ``validating_files``) and lists them as its waiting statuses."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class GpuWork(models.Model):
    """Abstract: the execution fields of a unit of GPU work (the concrete model declares
    ``org``, ``public_id`` and ``status``, whose choices include ``WorkStatus``)."""

    queue = models.CharField(max_length=200, default=queues.GPU)
    attempts = models.PositiveIntegerField(default=1)  # the fence: writes carry their attempt
    cancel_requested = models.BooleanField(default=False)
    dispatched_at = models.DateTimeField(
        null=True, blank=True, help_text="When the current attempt was handed to the broker."
    )
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True)
    progress = models.JSONField(default=dict, blank=True)
    error = models.JSONField(null=True, blank=True, help_text='{"code", "message", "param"}')

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
