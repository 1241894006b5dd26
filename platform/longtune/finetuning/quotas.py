"""Usage numbers for the quotas this app consumes, registered with tenancy.quotas.

Monthly training tokens: a job still running counts its *estimate* (reserved at creation); a
finished one counts what it actually trained (``trained_tokens``), so the budget is reconciled
when the job ends — a job cancelled after 10% of its steps gives 90% of its reservation back.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import BigIntegerField, Case, Sum, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from longtune.catalog.models import FineTunedModel
from longtune.finetuning.models import TERMINAL_STATUSES, FineTuningJob, JobCheckpoint
from longtune.tenancy.models import Organization
from longtune.tenancy.quotas import register_usage_provider


def month_start(now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def active_job_count(org: Organization) -> int:
    return FineTuningJob.objects.for_org(org).active().count()


def training_tokens_this_month(org: Organization) -> int:
    charged = Case(
        When(status__in=TERMINAL_STATUSES, then=Coalesce("trained_tokens", Value(0))),
        default="estimated_tokens",
        output_field=BigIntegerField(),
    )
    total = (
        FineTuningJob.objects.for_org(org)
        .filter(created_at__gte=month_start())
        .aggregate(total=Sum(charged))["total"]
    )
    return int(total or 0)


def storage_bytes_used(org: Organization) -> int:
    """Everything the org stores: files (the datasets app's count) + fine-tuned model
    artifacts + checkpoints kept in object storage. Registered last, so it includes files."""
    from longtune.datasets.services import storage_bytes_used as file_bytes_used

    models_total = FineTunedModel.objects.for_org(org).aggregate(total=Sum("artifact_bytes"))
    checkpoints = JobCheckpoint.objects.for_org(org).aggregate(total=Sum("bytes"))
    return file_bytes_used(org) + int(models_total["total"] or 0) + int(checkpoints["total"] or 0)


def register_usage_providers() -> None:
    register_usage_provider("max_concurrent_jobs", active_job_count)
    register_usage_provider("monthly_training_tokens", training_tokens_this_month)
    register_usage_provider("storage_bytes", storage_bytes_used)
