"""Accelerators per pool, and the one check that refuses to over-allocate them.

The inventory is configuration (``PROVISIONING_INVENTORY``: what the company has racked or
reserved per pool), not a model: it changes with hardware purchases, not with sales. An
instance allocates ``accelerators_per_replica x max_replicas`` of its type in its pool from
``requested`` until it is decommissioned (or failed), so a contract can always scale to its
maximum.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import F, Sum

from longtune.provisioning.conf import provisioning_conf
from longtune.provisioning.states import ALLOCATING


class InventoryError(ValueError):
    pass


class CapacityExceeded(Exception):
    def __init__(self, pool: str, accelerator_type: str, wanted: int, free: int) -> None:
        super().__init__(
            f"Pool {pool} has {free} free {accelerator_type} accelerator(s); this needs {wanted}."
        )
        self.pool, self.accelerator_type, self.wanted, self.free = (
            pool,
            accelerator_type,
            wanted,
            free,
        )


def parse_inventory(text: str) -> dict[str, dict[str, int]]:
    """``"us-east:h100_80gb=16,a100_80gb=8;local:cpu=4"`` -> {pool: {type: count}}."""
    pools: dict[str, dict[str, int]] = {}
    for chunk in filter(None, (c.strip() for c in text.split(";"))):
        pool, sep, items = chunk.partition(":")
        if not sep or not pool.strip():
            raise InventoryError(f"inventory entry {chunk!r} is not pool:type=count")
        types = pools.setdefault(pool.strip(), {})
        for item in filter(None, (i.strip() for i in items.split(","))):
            kind, eq, count = item.partition("=")
            if not eq or not count.strip().isdigit():
                raise InventoryError(f"inventory item {item!r} is not type=count")
            types[kind.strip()] = types.get(kind.strip(), 0) + int(count)
    return pools


def inventory() -> dict[str, dict[str, int]]:
    return parse_inventory(provisioning_conf().inventory)


@dataclass(frozen=True)
class CapacityRow:
    pool: str
    accelerator_type: str
    total: int
    allocated: int

    @property
    def free(self) -> int:
        return self.total - self.allocated


def allocations(exclude_pk: int | None = None) -> dict[tuple[str, str], int]:
    from longtune.provisioning.models import DedicatedInstance

    rows = DedicatedInstance.objects.unscoped_across_orgs().filter(state__in=ALLOCATING)
    if exclude_pk is not None:
        rows = rows.exclude(pk=exclude_pk)
    totals = (
        rows.values("pool", "accelerator_type")
        .annotate(n=Sum(F("accelerators_per_replica") * F("max_replicas")))
        .order_by()
    )
    return {(r["pool"], r["accelerator_type"]): int(r["n"] or 0) for r in totals}


def capacity_rows() -> list[CapacityRow]:
    """Every (pool, type) of the inventory, plus any allocated outside it (total 0)."""
    used = allocations()
    rows = [
        CapacityRow(pool, kind, total, used.get((pool, kind), 0))
        for pool, types in sorted(inventory().items())
        for kind, total in sorted(types.items())
    ]
    known = {(r.pool, r.accelerator_type) for r in rows}
    rows += [CapacityRow(p, k, 0, n) for (p, k), n in sorted(used.items()) if (p, k) not in known]
    return rows


def check_fits(
    pool: str, accelerator_type: str, accelerators: int, *, exclude_pk: int | None = None
) -> None:
    """Raise ``CapacityExceeded`` unless ``accelerators`` more fit in the pool (an instance
    being resized passes ``exclude_pk`` so its own old allocation is not counted twice)."""
    total = inventory().get(pool, {}).get(accelerator_type, 0)
    used = allocations(exclude_pk).get((pool, accelerator_type), 0)
    if accelerators > total - used:
        raise CapacityExceeded(pool, accelerator_type, accelerators, max(total - used, 0))
