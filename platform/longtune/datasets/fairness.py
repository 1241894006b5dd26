"""Fair scrubbing between tenants: at most N of one org's files are scrubbed at once.

Why per-org concurrency and not slices: one file is scrubbed in one streaming pass whose state
cannot be parked between tasks without storing raw personal data — the placeholder map
(``jane@acme.com`` -> ``[EMAIL_1]``, consistent across the whole file) and the gzip/zstd
decoder's position. Slicing would mean persisting that map (PII at rest, outside quarantine)
or re-decompressing from the start for every slice. So a file keeps its slot to the end, and
fairness comes from the other side: the cpu worker has several slots, and one org may hold
only ``max_concurrent_per_org`` of them (default 1). Another file of that org waits, re-checked
every ``defer_seconds``, while other orgs' files take the free slots. With S slots, any org is
served at once as long as fewer than S other orgs are scrubbing.

The count is taken from the database (``File.status`` + ``processing_started_at``), not from a
worker's memory, so it holds across worker machines, and a claim left by a worker that died
expires once the scrub's hard time limit has passed (the task was surely killed by then).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from longtune.compute.time_limits import TASK_KINDS, limit_for_kind
from longtune.datasets.models import File, FileStatus
from longtune.tenancy.models import Organization


@dataclass(frozen=True)
class ScrubFairnessConf:
    max_concurrent_per_org: int  # files of one org scrubbed at once, across all cpu workers
    defer_seconds: float  # a file over its org's limit is re-checked this often
    claim_expires_after: timedelta  # a claim older than this is a dead worker's


def scrub_fairness_conf() -> ScrubFairnessConf:
    from longtune.compute import tasks

    limit = limit_for_kind(TASK_KINDS[tasks.SCRUB_FILE])
    assert limit is not None  # scrubbing is always timed
    return ScrubFairnessConf(
        max_concurrent_per_org=max(1, int(settings.SCRUB_MAX_CONCURRENT_PER_ORG)),
        defer_seconds=float(settings.SCRUB_DEFER_SECONDS),
        claim_expires_after=timedelta(seconds=limit.hard_seconds),
    )


class Claim(StrEnum):
    CLAIMED = "claimed"  # this delivery scrubs the file now
    DEFERRED = "deferred"  # the org is at its limit: try again later, the file stays uploaded
    NOT_WAITING = "not_waiting"  # already processing (a redelivery), finished, or deleted


def running_scrubs(org_id: int, conf: ScrubFairnessConf) -> int:
    """The org's files being scrubbed now (claims younger than their expiry)."""
    return _running(conf).filter(org_id=org_id).count()


def _running(conf: ScrubFairnessConf):
    cutoff = timezone.now() - conf.claim_expires_after
    return File.objects.unscoped_across_orgs().filter(
        status=FileStatus.PROCESSING, processing_started_at__gt=cutoff
    )


def claim_for_scrubbing(file: File, conf: ScrubFairnessConf | None = None) -> Claim:
    """Move ``file`` from uploaded to processing unless its org already scrubs its quota.

    One conditional UPDATE decides (the count is its subquery), so two slots racing for the
    same org cannot both win: SQLite runs one writer at a time, and on PostgreSQL the org row
    is locked first, which serialises the claims of one org (other orgs are not affected).
    """
    conf = conf or scrub_fairness_conf()
    if file.status != FileStatus.UPLOADED:
        return Claim.NOT_WAITING
    running = (
        _running(conf)
        .filter(org_id=OuterRef("org_id"))
        .order_by()
        .values("org_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    with transaction.atomic():
        if connection.vendor == "postgresql":
            Organization.objects.select_for_update().filter(pk=file.org_id).first()
        claimed = (
            File.objects.unscoped_across_orgs()
            .filter(pk=file.pk, status=FileStatus.UPLOADED)
            .annotate(running=Coalesce(Subquery(running), Value(0), output_field=IntegerField()))
            .filter(running__lt=conf.max_concurrent_per_org)
            .update(status=FileStatus.PROCESSING, processing_started_at=timezone.now())
        )
    if claimed:
        file.status = FileStatus.PROCESSING
        return Claim.CLAIMED
    status = (
        File.objects.unscoped_across_orgs()
        .filter(pk=file.pk)
        .values_list("status", flat=True)
        .first()
    )
    return Claim.DEFERRED if status == FileStatus.UPLOADED else Claim.NOT_WAITING
