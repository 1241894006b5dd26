"""Queue names, and which queue an org's work goes to.

Queues:
  cpu                  scrubbing, validation, tokenizing, the periodic sweeps
  gpu                  the shared training pool
  inference            the shared serving pool
  gpu.<org-slug>       an org's dedicated capacity (training, or training and serving)
  inference.<org-slug> an org's dedicated serving capacity

Dedicated capacity is ONE model (``compute.models.DedicatedCapacity``): what it hosts and the
queue its machines consume. A dedicated queue is namespaced by its org's slug
(``gpu.<slug>`` or ``gpu.<slug>.<anything>``), so one org's routing can never name another
org's machines. This module does not import the models at import time: the Celery app reads
the static queue names from here while it configures itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from longtune.compute.models import DedicatedCapacity
    from longtune.tenancy.models import Organization

CPU = "cpu"
GPU = "gpu"
INFERENCE = "inference"
STATIC_QUEUES = (CPU, GPU, INFERENCE)

TRAINING = "training"
SERVING = "serving"
BOTH = "both"
# The conventional queue of dedicated capacity by what it hosts (a blank queue gets this).
DEDICATED_PREFIX = {TRAINING: GPU, SERVING: INFERENCE, BOTH: GPU}
DEDICATED_DEPLOYMENT = "dedicated"  # inference.models.Deployment.DEDICATED


def dedicated_queue_name(org_slug: str, hosts: str = TRAINING) -> str:
    """The conventional dedicated queue of an org: ``gpu.<slug>`` / ``inference.<slug>``."""
    return f"{DEDICATED_PREFIX[hosts]}.{org_slug}"


def queue_belongs_to(queue: str, org_slug: str) -> bool:
    """True when ``queue`` is in ``org_slug``'s namespace (``<gpu|inference>.<slug>[.<x>]``).
    Slugs have no dots, so no other org's slug can produce a name in this namespace."""
    prefix, _, rest = queue.partition(".")
    if prefix not in (GPU, INFERENCE) or not org_slug:
        return False
    return rest == org_slug or rest.startswith(f"{org_slug}.")


def dedicated_capacity_for(org: Organization, hosts: str) -> DedicatedCapacity | None:
    """The org's newest active capacity hosting ``hosts`` work (``both`` hosts either kind);
    else its newest inactive capacity that holds work while inactive (a dedicated instance
    that is provisioning or draining without fallback to the shared pool: the work waits on
    that queue for the machines); else None (the shared pool)."""
    from longtune.compute.models import DedicatedCapacity

    rows = DedicatedCapacity.objects.for_org(org).filter(hosts__in=(hosts, BOTH))
    newest = ("-created_at", "-pk")
    return (
        rows.filter(active=True).order_by(*newest).first()
        or rows.filter(active=False, hold_while_inactive=True).order_by(*newest).first()
    )


def _own_queue(org: Organization, capacity: DedicatedCapacity | None) -> str | None:
    # Belt and braces: a row written around the model's validation (a shell, a raw update)
    # must still not send this org's work to a queue outside its namespace.
    if capacity is None or not queue_belongs_to(capacity.queue, org.slug):
        return None
    return capacity.queue


def training_queue_for(org: Organization) -> str:
    """The org's dedicated training queue when staff gave it capacity, else the shared pool."""
    return _own_queue(org, dedicated_capacity_for(org, TRAINING)) or GPU


def serving_queue_for(org: Organization, deployment: str) -> str:
    """Shared endpoints ride the shared ``inference`` pool. Dedicated ones go to the org's
    serving capacity, or to its conventional ``inference.<slug>`` queue, where the org's
    dedicated replicas wait until staff start a worker on it."""
    if deployment != DEDICATED_DEPLOYMENT:
        return INFERENCE
    capacity = _own_queue(org, dedicated_capacity_for(org, SERVING))
    return capacity or dedicated_queue_name(org.slug, SERVING)
