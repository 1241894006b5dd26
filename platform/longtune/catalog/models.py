"""The model catalog: base models staff register, and the fine-tuned models jobs produce.

Why an app of its own: fine-tuning creates models, inference serves them and datasets count
tokens with their tokenizers; none of those should own "which models exist and who may use
them". The tables keep their original names (``finetuning_*``): the models moved here in
state only (catalog/migrations/0001), no row was copied.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from longtune.api.ids import PublicIdField
from longtune.tenancy.models import Organization
from longtune.tenancy.scoping import OrgOwnedModelMixin, OrgScopedManager

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
    # gpu_runtime.memory_planner.ModelShape as a dict: what job planning predicts peak memory
    # from (finetuning.planning.plan_memory). Empty: jobs on this model are not memory-planned.
    architecture = models.JSONField(
        default=dict,
        blank=True,
        help_text='{"layers", "hidden", "intermediate", "heads", "kv_heads", "vocab", '
        '"tie_embeddings", "params"} (from config.json; bootstrap_demo fills it). Empty: jobs '
        "on this model are not memory-planned.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BaseModelQuerySet.as_manager()

    class Meta:
        db_table = "finetuning_basemodel"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.architecture:
            from gpu_runtime.memory_planner import ModelShape

            try:
                ModelShape.from_dict(self.architecture)
            except ValueError as exc:
                raise ValidationError({"architecture": str(exc)}) from exc


class FineTunedModel(OrgOwnedModelMixin, models.Model):
    """A trained artifact (adapter or full weights + config + tokenizer + summary) under
    ``orgs/<org>/models/<public_id>/``; ``name`` is the OpenAI-style model id.

    ``context`` is the run's ``gpu_runtime.contract.ContextSpec`` as a dict (original and
    target length, RoPE method and factor); ``context_length`` is its ``target_length``, kept as
    a column because the API shows it and queries filter on it. Both are written together by
    ``catalog.services.publish_fine_tuned_model`` only.
    """

    public_id = PublicIdField(prefix="ftm_")
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="ft_models")
    name = models.CharField(max_length=300, unique=True)
    job = models.OneToOneField(
        "finetuning.FineTuningJob",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="result_model",
    )
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="+")
    method = models.CharField(max_length=10, default="lora")
    context_length = models.PositiveIntegerField()
    context = models.JSONField(
        default=dict,
        blank=True,
        help_text="ContextSpec: original_length, target_length, rope_method, rope_factor.",
    )
    # A per-epoch checkpoint of a job (``<job's model name>:ckpt-step-<n>``), deployable and
    # listed by GET /v1/fine_tuning/jobs/{id}/checkpoints; ``job`` stays the job's final model.
    checkpoint_of = models.ForeignKey(
        "finetuning.FineTuningJob",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="checkpoint_models",
    )
    checkpoint_step = models.PositiveIntegerField(null=True, blank=True)
    # The fine-tuned model (final or checkpoint) the job that made this one continued from
    # (its job's ``parent_model``); ``base_model`` stays the base under both. Null: trained
    # from the base model itself.
    parent_model = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    artifact_prefix = models.CharField(max_length=500)
    artifact_bytes = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    # DELETE /v1/models/{id}: hidden from the org and its artifact removed; the row stays for
    # the job that made it and for the endpoints and usage rows that name it.
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = OrgScopedManager()

    class Meta:
        db_table = "finetuning_finetunedmodel"
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.name
