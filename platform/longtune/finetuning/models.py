"""Fine-tuning: the base-model registry, jobs with their events and checkpoints, and the
fine-tuned models they produce.

A job is a state machine (``JobStatus``); a worker owns it for one *attempt* at a time. The
watchdog bumps ``attempts`` when a worker goes silent, and every write a worker makes is
conditional on the attempt it was given, so a presumed-dead worker that wakes up cannot
overwrite the state of the attempt that replaced it.
"""

from __future__ import annotations

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from longtune.api.ids import PublicIdField
from longtune.events import EventLevel, OrgEvent
from longtune.tenancy.models import Organization
from longtune.tenancy.scoping import (
    OrgOwnedModelMixin,
    OrgScopedManager,
    OrgScopedQuerySet,
    org_scoped_manager,
)

BASE_MODEL_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"  # no ":" — that marks ft: names


class BaseModelQuerySet(models.QuerySet):
    def visible_to(self, org: Organization) -> models.QuerySet:
        """Public models plus the private ones staff registered for this org."""
        return self.filter(Q(is_public=True) | Q(org=org))


class BaseModel(models.Model):
    """An open model staff registered in the admin. Weights live at ``location``: a local
    directory or an ``s3://bucket/prefix`` (config.json + safetensors + tokenizer)."""

    name = models.CharField(
        max_length=100, unique=True, validators=[RegexValidator(BASE_MODEL_NAME_RE)]
    )
    location = models.CharField(max_length=1000, help_text="Local directory or s3://bucket/prefix")
    original_context_length = models.PositiveIntegerField(
        validators=[MinValueValidator(2)],
        help_text="Context the model was pre-trained at (RoPE factor = target / this).",
    )
    max_context_length = models.PositiveIntegerField(
        validators=[MinValueValidator(2)], help_text="Longest context a job may ask for."
    )
    is_public = models.BooleanField(default=True, help_text="Offered to every organization.")
    org = models.ForeignKey(
        Organization,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="private_base_models",
        help_text="A non-public model is offered to this organization only.",
    )
    description = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BaseModelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class OrgFinetuningSettings(OrgOwnedModelMixin, models.Model):
    """Per-org routing: a non-NULL ``dedicated_queue`` sends the org's training there
    (normally ``workers.celery_app.dedicated_gpu_queue(slug)``) instead of the shared pool."""

    org = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="finetuning_settings"
    )
    dedicated_queue = models.CharField(
        max_length=200,
        null=True,
        blank=True,
        validators=[RegexValidator(r"^gpu\.[A-Za-z0-9_.-]+$")],
    )

    objects = OrgScopedManager()

    class Meta:
        verbose_name = "fine-tuning settings"
        verbose_name_plural = "fine-tuning settings"

    def __str__(self) -> str:
        return f"fine-tuning settings for {self.org.slug}"


class JobStatus(models.TextChoices):
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATUSES = (JobStatus.VALIDATING_FILES, JobStatus.QUEUED, JobStatus.RUNNING)
TERMINAL_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobQuerySet(OrgScopedQuerySet):
    def active(self) -> models.QuerySet:
        return self.filter(status__in=ACTIVE_STATUSES)


class FineTuningJob(OrgOwnedModelMixin, models.Model):
    public_id = PublicIdField(prefix="ftjob-")
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="ft_jobs")
    created_by_key = models.ForeignKey(
        "tenancy.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="jobs")
    model_name = models.CharField(max_length=100, help_text="Base model name as requested.")
    # Files: FK for joins; the public id copy survives the file's deletion (OpenAI keeps it).
    training_file = models.ForeignKey(
        "lt_datasets.File", null=True, on_delete=models.SET_NULL, related_name="+"
    )
    training_file_ref = models.CharField(max_length=64)
    validation_file = models.ForeignKey(
        "lt_datasets.File", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    validation_file_ref = models.CharField(max_length=64, blank=True)

    status = models.CharField(
        max_length=20, choices=JobStatus.choices, default=JobStatus.VALIDATING_FILES
    )
    error = models.JSONField(null=True, blank=True, help_text='{"code", "message", "param"}')

    # What to train (resolved: no "auto" left)
    method = models.CharField(max_length=10, default="lora")  # "lora" | "full"
    hyperparameters = models.JSONField(default=dict)  # n_epochs, batch_size, lr multiplier
    lora = models.JSONField(null=True, blank=True)  # r, alpha, dropout, target_modules
    context_length = models.PositiveIntegerField()
    rope_method = models.CharField(max_length=20)
    rope_factor = models.FloatField()
    recipe = models.JSONField(null=True, blank=True)
    train_on_inputs = models.BooleanField(default=False)
    suffix = models.CharField(max_length=64, blank=True)
    seed = models.BigIntegerField()

    # Tokens: reserved against the monthly budget at creation, reconciled when it ends.
    estimated_tokens = models.BigIntegerField(default=0)
    trained_tokens = models.BigIntegerField(null=True, blank=True)

    # Execution
    queue = models.CharField(max_length=200, default="gpu")
    attempts = models.PositiveIntegerField(default=1)
    cancel_requested = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True)
    progress = models.JSONField(default=dict, blank=True)

    # Results
    fine_tuned_model = models.CharField(max_length=300, null=True, blank=True)
    metrics_file = models.ForeignKey(
        "lt_datasets.File", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    idempotency_key = models.CharField(max_length=255, blank=True)
    request_fingerprint = models.CharField(max_length=64, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = org_scoped_manager(JobQuerySet)

    class Meta:
        ordering = ["pk"]
        indexes = [
            models.Index(fields=["org", "status"]),
            models.Index(fields=["status", "heartbeat_at"]),
            models.Index(fields=["org", "created_at"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["org", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="ft_job_unique_idempotency_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class EventType(models.TextChoices):
    MESSAGE = "message"
    METRICS = "metrics"


class JobEvent(OrgEvent):
    """An entry of ``GET /v1/fine_tuning/jobs/{id}/events``; ``type`` marks metrics rows."""

    public_id = PublicIdField(prefix="ftevent-")
    job = models.ForeignKey(FineTuningJob, on_delete=models.CASCADE, related_name="events")
    level = models.CharField(max_length=10, choices=EventLevel.choices, default=EventLevel.INFO)
    type = models.CharField(max_length=10, choices=EventType.choices, default=EventType.MESSAGE)

    class Meta(OrgEvent.Meta):
        indexes = [models.Index(fields=["job", "id"])]


class JobCheckpoint(OrgOwnedModelMixin, models.Model):
    """A checkpoint uploaded to object storage (``storage_prefix``); the newest one is what a
    fresh worker on another machine resumes from."""

    public_id = PublicIdField(prefix="ftckpt-")
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    job = models.ForeignKey(FineTuningJob, on_delete=models.CASCADE, related_name="checkpoints")
    step = models.PositiveIntegerField()
    metrics = models.JSONField(default=dict)
    storage_prefix = models.CharField(max_length=500)
    bytes = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgScopedManager()

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(fields=["job", "step"], name="ft_checkpoint_unique_step")
        ]

    def __str__(self) -> str:
        return f"{self.job.public_id} step {self.step}"


class FineTunedModel(OrgOwnedModelMixin, models.Model):
    """A trained artifact (adapter or full weights + config + tokenizer + summary) under
    ``orgs/<org>/models/<public_id>/``; ``name`` is the OpenAI-style model id."""

    public_id = PublicIdField(prefix="ftm_")
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="ft_models")
    name = models.CharField(max_length=300, unique=True)
    job = models.OneToOneField(
        FineTuningJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="result_model"
    )
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="+")
    method = models.CharField(max_length=10, default="lora")
    context_length = models.PositiveIntegerField()
    rope = models.JSONField(default=dict)
    artifact_prefix = models.CharField(max_length=500)
    artifact_bytes = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgScopedManager()

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.name
