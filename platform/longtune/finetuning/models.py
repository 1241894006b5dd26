"""Fine-tuning: jobs with their events and checkpoints. The base models they start from and
the fine-tuned models they produce belong to the model catalog (``longtune.catalog``).

A job is a state machine (``JobStatus``); a worker owns it for one *attempt* at a time. The
watchdog bumps ``attempts`` when a worker goes silent, and every write a worker makes is
conditional on the attempt it was given, so a presumed-dead worker that wakes up cannot
overwrite the state of the attempt that replaced it.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from longtune.api.ids import PublicIdField
from longtune.compute.models import GpuWork
from longtune.events import EventLevel, OrgEvent
from longtune.tenancy.models import Organization
from longtune.tenancy.scoping import (
    OrgOwnedModelMixin,
    OrgScopedManager,
    OrgScopedQuerySet,
    org_scoped_manager,
)


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


class FineTuningJob(OrgOwnedModelMixin, GpuWork):
    """Execution fields (queue, attempts, heartbeat, progress, error, timestamps) come from
    ``compute.models.GpuWork``; ``finetuning.lifecycle`` drives them."""

    public_id = PublicIdField(prefix="ftjob-")
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="ft_jobs")
    created_by_key = models.ForeignKey(
        "tenancy.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    base_model = models.ForeignKey(
        "catalog.BaseModel", on_delete=models.PROTECT, related_name="jobs"
    )
    # The name the client gave as ``model`` (OpenAI's job ``model``): a base model's name, or a
    # fine-tuned model's or checkpoint's ``ft:`` name when the job continues from it.
    model_name = models.CharField(max_length=300, help_text="Model name as requested.")
    # The org's fine-tuned model (final or a per-epoch checkpoint) this job starts from: its
    # weights (LoRA adapter or full weights) are where training begins, its method, LoRA shape
    # and RoPE method are inherited (finetuning.services.plan_job). Null: from the base itself.
    parent_model = models.ForeignKey(
        "catalog.FineTunedModel",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="child_jobs",
    )
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

    # What to train (resolved: no "auto" left)
    method = models.CharField(max_length=10, default="lora")  # "lora" | "full"
    hyperparameters = models.JSONField(default=dict)  # n_epochs, batch_size, lr multiplier
    lora = models.JSONField(null=True, blank=True)  # r, alpha, dropout, target_modules
    # The run's ContextSpec (gpu_runtime.contract) as planned once at creation
    # (finetuning.planning.plan_context): the ONE record of its lengths and RoPE scaling, handed
    # unchanged to TrainConfig and from there into the saved model config.
    context = models.JSONField(
        help_text='{"original_length", "target_length", "rope_method", "rope_factor"}'
    )
    # The memory plan chosen at creation (finetuning.planning.plan_memory): the accelerator,
    # the layout (parallel degrees, checkpointing, tiling, offload) and the predicted peak per
    # rank by component (gpu_runtime.memory_planner.MemoryPlan.to_dict). train_config_for
    # applies its knobs. Null: the base model has no recorded architecture (or the job predates
    # planning).
    memory_plan = models.JSONField(null=True, blank=True)
    recipe = models.JSONField(null=True, blank=True)
    train_on_inputs = models.BooleanField(default=False)
    suffix = models.CharField(max_length=64, blank=True)
    seed = models.BigIntegerField()

    # Tokens: reserved against the monthly budget at creation, reconciled when it ends.
    estimated_tokens = models.BigIntegerField(default=0)
    trained_tokens = models.BigIntegerField(null=True, blank=True)

    # The ``evaluation`` option: {"suite", "lengths", "depths", "samples", "seed", "id"}; on
    # success the job creates that evaluation of its model and stores its public id in "id".
    evaluation = models.JSONField(null=True, blank=True)

    # Results
    fine_tuned_model = models.CharField(max_length=300, null=True, blank=True)
    metrics_file = models.ForeignKey(
        "lt_datasets.File", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    idempotency_key = models.CharField(max_length=255, blank=True)
    request_fingerprint = models.CharField(max_length=64, blank=True)

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

    # Read-only views of ``context`` under the API's names (context_length, rope_scaling).
    @property
    def context_length(self) -> int:
        return int(self.context["target_length"])

    @property
    def rope_method(self) -> str:
        return str(self.context["rope_method"])

    @property
    def rope_factor(self) -> float:
        return float(self.context["rope_factor"])


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
    storage_prefix = models.CharField(max_length=500)  # the resume state; "" once pruned
    bytes = models.BigIntegerField(default=0)
    # The epoch's servable model (catalog), when this step closed an epoch: what makes the
    # checkpoint deployable and fine-tunable by its fine_tuned_model_checkpoint name.
    fine_tuned_model = models.ForeignKey(
        "catalog.FineTunedModel", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgScopedManager()

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(fields=["job", "step"], name="ft_checkpoint_unique_step")
        ]

    def __str__(self) -> str:
        return f"{self.job.public_id} step {self.step}"
