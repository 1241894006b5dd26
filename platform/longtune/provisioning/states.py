"""The state machine of a dedicated instance, as data (the services apply it).

    requested ──provision──> provisioning ──(replicas healthy)──> ready
        │                        │  ▲                               │
        │                        │  └──────── resize ───────────────┤ (ready stays ready)
        │                        └──(driver error)──> failed        │
        └──────── decommission ──────────────────────────┐        drain
                                                         ▼          ▼
                          draining ──(workers stopped)──> decommissioned
    failed ──decommission──> decommissioned   failed ──provision──> provisioning (retry)

Routing follows the state (``services.sync_capacity``): only a ``ready`` instance's capacity
is active; while provisioning/draining its org's new work waits on the instance's queue, or
goes to the shared pool when the contract allows fallback; requested, decommissioned and
failed instances route nothing.
"""

from __future__ import annotations

from django.db import models


class InstanceState(models.TextChoices):
    REQUESTED = "requested"
    PROVISIONING = "provisioning"
    READY = "ready"
    DRAINING = "draining"
    DECOMMISSIONED = "decommissioned"
    FAILED = "failed"


S = InstanceState
TRANSITIONS: dict[str, frozenset[str]] = {
    S.REQUESTED: frozenset({S.PROVISIONING, S.DECOMMISSIONED, S.FAILED}),
    S.PROVISIONING: frozenset({S.READY, S.FAILED, S.DRAINING}),
    S.READY: frozenset({S.DRAINING, S.FAILED}),
    S.DRAINING: frozenset({S.DECOMMISSIONED, S.FAILED}),
    S.FAILED: frozenset({S.PROVISIONING, S.DECOMMISSIONED}),
    S.DECOMMISSIONED: frozenset(),
}
# States whose accelerators are allocated in the pool (the capacity view counts them).
ALLOCATING = frozenset({S.REQUESTED, S.PROVISIONING, S.READY, S.DRAINING})
# States in which worker processes / pods should exist.
RUNNING = frozenset({S.PROVISIONING, S.READY})
# States in which the org's work waits on the instance's queue (no fallback). Not
# ``requested``: a booking for a contract that starts next month must not stall the org's
# work on the shared pool until someone provisions it.
HOLDING = frozenset({S.PROVISIONING, S.DRAINING})


class IllegalTransition(Exception):
    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"A dedicated instance cannot go from {current} to {target}.")
        self.current, self.target = current, target


def check(current: str, target: str) -> None:
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target)
