"""Uploaded files. The raw bytes sit in quarantine until the scrubber has replaced PII and
validated every line; only the scrubbed object is ever read by training or downloads."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from longtune.api.ids import PublicIdField
from longtune.tenancy.models import Organization
from longtune.tenancy.scoping import OrgOwnedModelMixin, OrgScopedManager


class FilePurpose(models.TextChoices):
    FINE_TUNE = "fine-tune", "fine-tune"
    EVALUATION = "evaluation", "evaluation"  # decontamination reference sets
    # A finished job's step metrics (CSV), written by the catalog when it publishes the model.
    FINE_TUNE_RESULTS = "fine-tune-results", "fine-tune-results"
    # An evaluation job's heatmap (PNG), written when the evaluation finishes.
    EVALUATION_RESULTS = "evaluation-results", "evaluation-results"


# What a client may upload: JSONL datasets. Result files are only ever written by the platform.
DATASET_PURPOSES: tuple[str, ...] = (FilePurpose.FINE_TUNE.value, FilePurpose.EVALUATION.value)
DATASET_PURPOSE_CHOICES = [(p, p) for p in DATASET_PURPOSES]


class FileStatus(models.TextChoices):
    UPLOADED = "uploaded", "uploaded"  # raw object in quarantine, scrub task queued
    PROCESSING = "processing", "processing"  # scrubber running
    PROCESSED = "processed", "processed"  # scrubbed object stored, raw deleted, report ready
    ERROR = "error", "error"  # rejected (see `error`); raw deleted, nothing kept


class File(OrgOwnedModelMixin, models.Model):
    public_id = PublicIdField(prefix="file-")
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="files")
    uploaded_by_key = models.ForeignKey(
        "tenancy.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    uploaded_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    filename = models.CharField(max_length=255)
    purpose = models.CharField(max_length=20, choices=FilePurpose.choices)
    status = models.CharField(
        max_length=20, choices=FileStatus.choices, default=FileStatus.UPLOADED, db_index=True
    )
    bytes = models.BigIntegerField(default=0, help_text="Size of the upload as sent.")
    scrubbed_bytes = models.BigIntegerField(null=True, blank=True)
    format = models.CharField(max_length=20, blank=True, help_text="chat | instruction | text")
    num_examples = models.IntegerField(null=True, blank=True)
    num_tokens = models.BigIntegerField(null=True, blank=True)
    raw_key = models.CharField(
        max_length=512, blank=True, help_text="Quarantine object; '' once deleted."
    )
    scrubbed_key = models.CharField(max_length=512, blank=True)
    report = models.JSONField(
        default=dict, blank=True, help_text="Validation, PII and token report."
    )
    error = models.JSONField(
        null=True, blank=True, help_text='{"code", "message", "line", "errors": [...]}'
    )
    created_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # When a scrubber claimed it: the org's running scrubs are counted from this
    # (datasets/fairness.py), so a crashed worker's claim expires with the hard time limit.
    processing_started_at = models.DateTimeField(null=True, blank=True)

    objects = OrgScopedManager()

    class Meta:
        ordering = ["pk"]
        indexes = [models.Index(fields=["org", "status"])]

    def __str__(self) -> str:
        return f"{self.public_id} {self.filename} ({self.status})"


def default_pii_entities() -> list[str]:
    from longtune.datasets.pii import ALL_ENTITIES

    return sorted(ALL_ENTITIES)


class OrgPiiPolicy(OrgOwnedModelMixin, models.Model):
    """What the scrubber replaces for one organization, and what it must leave alone.

    One row per org, created on first edit; an org without a row gets the default policy
    (every entity type, no allow-list). Validated by ``policies.validate_policy_fields`` both
    here (admin) and in the API serializer, so a bad regex never reaches a worker.
    """

    org = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="pii_policy")
    entities = models.JSONField(
        default=default_pii_entities, help_text="Entity types to scrub, e.g. EMAIL, PHONE."
    )
    allow_values = models.JSONField(
        default=list, blank=True, help_text="Literal values kept as-is (case-insensitive)."
    )
    allow_patterns = models.JSONField(
        default=list, blank=True, help_text="Regexes; a detected value that fully matches is kept."
    )
    updated_at = models.DateTimeField(auto_now=True)

    objects = OrgScopedManager()

    class Meta:
        verbose_name = "PII policy"
        verbose_name_plural = "PII policies"

    def __str__(self) -> str:
        return f"PII policy of {self.org}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from longtune.datasets.policies import PolicyError, validate_policy_fields

        try:
            validate_policy_fields(self.entities, self.allow_values, self.allow_patterns)
        except PolicyError as exc:
            field, _, index = exc.field.partition(".")  # the admin form knows fields, not items
            where = f"item {int(index) + 1}: " if index else ""
            raise ValidationError({field: where + exc.message}) from exc


# --- resumable uploads (OpenAI's Uploads API) ---------------------------------------------------


class UploadStatus(models.TextChoices):
    PENDING = "pending", "pending"  # accepting parts
    COMPLETED = "completed", "completed"  # assembled into `file`
    CANCELLED = "cancelled", "cancelled"
    EXPIRED = "expired", "expired"  # not completed within the hour; parts deleted


class Upload(OrgOwnedModelMixin, models.Model):
    """A big file arriving in parts, assembled into a File (in quarantine) on completion.

    The File's public id is chosen at creation so every byte (parts sent through the API, or
    an S3 multipart upload the client PUTs to directly) is staged under that file's quarantine
    key from the start: raw data never sits outside quarantine. ``bytes`` is the declared
    size; a pending upload holds that much of the storage quota until it ends.
    """

    public_id = PublicIdField(prefix="upload_")
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="uploads")
    created_by_key = models.ForeignKey(
        "tenancy.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    filename = models.CharField(max_length=255)
    purpose = models.CharField(max_length=20, choices=DATASET_PURPOSE_CHOICES)
    mime_type = models.CharField(max_length=255)
    bytes = models.BigIntegerField(help_text="Declared total size; parts must add up to it.")
    status = models.CharField(
        max_length=20, choices=UploadStatus.choices, default=UploadStatus.PENDING, db_index=True
    )
    file_public_id = models.CharField(
        max_length=64, unique=True, help_text="Public id the assembled File gets."
    )
    s3_multipart_id = models.CharField(
        max_length=1024, blank=True, help_text="Storage multipart upload id (presigned parts)."
    )
    file = models.OneToOneField(
        File, null=True, blank=True, on_delete=models.SET_NULL, related_name="upload"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    objects = OrgScopedManager()

    class Meta:
        ordering = ["pk"]
        indexes = [models.Index(fields=["org", "status"])]

    def __str__(self) -> str:
        return f"{self.public_id} {self.filename} ({self.status})"


class UploadPart(models.Model):
    """One Part sent through POST /v1/uploads/{id}/parts, stored as its own object."""

    public_id = PublicIdField(prefix="part_")
    upload = models.ForeignKey(Upload, on_delete=models.CASCADE, related_name="parts")
    bytes = models.BigIntegerField()
    object_key = models.CharField(max_length=512)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.public_id} of {self.upload_id} ({self.bytes} bytes)"
