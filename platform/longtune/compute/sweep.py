"""The re-dispatch sweep: work whose broker message was lost is published again.

Each kind of work registers its sweep here from its AppConfig.ready() (a
``GpuWorkLifecycle.sweep_lost_messages``, or the shared servers' own), so compute knows no
app and a new kind of GPU work is swept by registering one line. The periodic task
(``compute.tasks.REDISPATCH_SWEEP``, workers/compute.py) calls ``redispatch_lost_work``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from longtune.compute import broker
from longtune.compute.conf import compute_conf

logger = logging.getLogger("longtune.compute")

QueueIsIdle = Callable[[str], bool]
Sweep = Callable[[timedelta, QueueIsIdle], list[str]]  # -> public ids re-dispatched

_SWEEPS: dict[str, Sweep] = {}


def register_redispatch(name: str, sweep: Sweep) -> None:
    """Register (or replace) the sweep of one kind of work, e.g. ``"fine-tuning jobs"``."""
    _SWEEPS[name] = sweep


def registered() -> dict[str, Sweep]:
    return dict(_SWEEPS)


def redispatch_lost_work(
    older_than_seconds: float | None = None, queue_is_idle: QueueIsIdle | None = None
) -> dict[str, list[str]]:
    """Run every registered sweep; one failing kind does not stop the others."""
    seconds = (
        compute_conf().redispatch_after_seconds
        if older_than_seconds is None
        else older_than_seconds
    )
    idle = queue_is_idle or broker.queue_is_empty
    done: dict[str, list[str]] = {}
    for name, sweep in _SWEEPS.items():
        try:
            done[name] = sweep(timedelta(seconds=seconds), idle)
        except Exception:  # noqa: BLE001 - logged; the next run tries again
            logger.exception("re-dispatch sweep of %s failed", name)
            done[name] = []
    return done


# --- re-routing: work waiting on a queue whose machines are gone -----------------------------

Reroute = Callable[[str], list[str]]  # queue -> public ids sent elsewhere

_REROUTES: dict[str, Reroute] = {}


def register_reroute(name: str, reroute: Reroute) -> None:
    """Register (or replace) how one kind of work leaves a queue that no machine will consume
    again (a decommissioned dedicated instance's): e.g. ``JOBS.reroute_waiting``."""
    _REROUTES[name] = reroute


def reroute_waiting_work(queue: str) -> dict[str, list[str]]:
    """Every registered kind of work waiting on ``queue`` is routed afresh and re-published;
    one failing kind does not stop the others."""
    done: dict[str, list[str]] = {}
    for name, reroute in _REROUTES.items():
        try:
            done[name] = reroute(queue)
        except Exception:  # noqa: BLE001 - logged; the lost-message sweep is the backstop
            logger.exception("re-routing %s off %s failed", name, queue)
            done[name] = []
    return done


# --- draining: work that never finishes by itself leaves a queue being drained -----------------

_DRAINS: dict[str, Reroute] = {}


def register_drain(name: str, drain: Reroute) -> None:
    """Register how one kind of never-ending work (a serving replica) leaves a queue whose
    workers are draining: a drain waits for running work, and a replica runs until stopped."""
    _DRAINS[name] = drain


def drain_queue(queue: str) -> dict[str, list[str]]:
    """Every registered kind of never-ending work on ``queue`` is restarted where routing now
    points (a finite job just finishes where it runs)."""
    done: dict[str, list[str]] = {}
    for name, drain in _DRAINS.items():
        try:
            done[name] = drain(queue)
        except Exception:  # noqa: BLE001 - logged; the drain waits, staff can stop it
            logger.exception("draining %s off %s failed", name, queue)
            done[name] = []
    return done
