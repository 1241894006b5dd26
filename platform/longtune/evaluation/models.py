"""An evaluation job: one suite (passkey retrieval, RULER-style tasks, perplexity by length) run
on one model.

The execution fields (queue, attempts, heartbeat, progress, cancel flag, error, timestamps)
are ``compute.models.GpuWork``'s; ``evaluation.lifecycle.EVALUATIONS`` drives them.
"""

from __future__ import annotations

from django.db import models

from longtune.api.ids import PublicIdField
from longtune.compute.models import GpuWork, WorkStatus
from longtune.events import EventLevel, OrgEvent
from longtune.tenancy.models import ApiKey, Organization
from longtune.tenancy.scoping import OrgOwnedModelMixin, OrgScopedManager

__all__ = [
    "EvaluationEvent",
    "EvaluationGate",
    "EvaluationJob",
    "EventLevel",
    "RulerTask",
    "Suite",
    "WorkStatus",
]


class Suite(models.TextChoices):
    PASSKEY = "passkey", "passkey"  # needle in a haystack: accuracy by length x depth
    PERPLEXITY = "perplexity", "perplexity"  # perplexity of long real text by length
    RULER = "ruler", "ruler"  # RULER's synthetic tasks: score per task and length


class RulerTask(models.TextChoices):
    """The tasks of the ruler suite: ``gpu_runtime.context_eval.RULER_TASKS`` (which the web
    tier may not import; tests/evaluation/test_context_eval.py keeps the two equal)."""

    NIAH_SINGLE = "niah_single", "niah_single"
    NIAH_MULTIKEY = "niah_multikey", "niah_multikey"
    NIAH_MULTIVALUE = "niah_multivalue", "niah_multivalue"
    NIAH_MULTIQUERY = "niah_multiquery", "niah_multiquery"
    VARIABLE_TRACKING = "variable_tracking", "variable_tracking"
    COMMON_WORDS_EXTRACTION = "common_words_extraction", "common_words_extraction"


TERMINAL_STATUSES = (WorkStatus.SUCCEEDED, WorkStatus.FAILED, WorkStatus.CANCELLED)


class EvaluationJob(OrgOwnedModelMixin, GpuWork):
    public_id = PublicIdField(prefix="evaljob-")
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="evaluations")
    created_by_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    model = models.CharField(max_length=300)  # the name the client gave (base or ft:)
    base_model = models.ForeignKey("catalog.BaseModel", on_delete=models.PROTECT, related_name="+")
    fine_tuned_model = models.ForeignKey(
        "catalog.FineTunedModel", null=True, on_delete=models.PROTECT, related_name="+"
    )
    suite = models.CharField(max_length=20, choices=Suite.choices)
    lengths = models.JSONField()  # [int] context lengths in tokens, ascending
    depths = models.JSONField(default=list)  # [float] needle depths (passkey only)
    tasks = models.JSONField(default=list)  # [str] RULER tasks (ruler only), in request order
    samples = models.PositiveIntegerField(default=1)  # keys per (length, depth) cell
    seed = models.BigIntegerField(default=0)
    status = models.CharField(max_length=20, choices=WorkStatus.choices, default=WorkStatus.QUEUED)
    results = models.JSONField(null=True, blank=True)
    result_file = models.ForeignKey(
        "lt_datasets.File", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = OrgScopedManager()

    class Meta:
        ordering = ["pk"]
        indexes = [
            models.Index(fields=["org", "status"]),
            models.Index(fields=["status", "heartbeat_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.suite}, {self.status})"


class EvaluationEvent(OrgEvent):
    """An entry of ``GET /v1/evaluations/{id}/events``."""

    public_id = PublicIdField(prefix="evalevent-")
    evaluation = models.ForeignKey(EvaluationJob, on_delete=models.CASCADE, related_name="events")
    level = models.CharField(max_length=10, choices=EventLevel.choices, default=EventLevel.INFO)

    class Meta(OrgEvent.Meta):
        indexes = [models.Index(fields=["evaluation", "id"])]


class EvaluationGate(OrgOwnedModelMixin, models.Model):
    """The org's eval gate (``GET/PUT /v1/evaluation_gate``): with a threshold set, no
    fine-tuned model of the org deploys (create, or start again) unless its newest succeeded
    passkey evaluation at its trained context scored at least that (``evaluation.gate``).

    One row per org, created on first PUT; no row (or a null threshold) means no org gate."""

    org = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="evaluation_gate"
    )
    min_passkey_accuracy = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = OrgScopedManager()

    def __str__(self) -> str:
        return f"Evaluation gate of {self.org}: {self.min_passkey_accuracy}"
