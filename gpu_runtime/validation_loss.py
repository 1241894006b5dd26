"""Validation loss: the training objective, without gradients, over held-out packed rows.

The validation examples are packed exactly like the training data (same tokenizer, sequence
length, label rules), so `valid_loss` and the training `loss` measure the same thing: the
token-weighted mean next-token loss over target tokens, summed over every rank before dividing.

Under DDP/FSDP every rank must run the same number of forwards (FSDP gathers shards inside the
forward, DDP broadcasts buffers). Rank r takes rows r, r + W, ...; a rank left short is topped
up with a copy of a row whose labels are all ignored, which costs a forward but adds nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from gpu_runtime.data import Batch, collate
from gpu_runtime.distributed import DistContext, all_reduce_sum
from gpu_runtime.formats import IGNORE_INDEX
from gpu_runtime.packing import PackedSequence
from gpu_runtime.sequence_parallel import SequenceLayout, count_targets, prepare_batch


@dataclass(frozen=True)
class EvalOutcome:
    loss: float  # token-weighted mean over every rank's target tokens
    target_tokens: int  # tokens the loss counted, all ranks


def _ignored_copy(row: PackedSequence) -> PackedSequence:
    """Same shape as `row`, contributes no target token (keeps ranks' forward counts equal)."""
    return PackedSequence(
        input_ids=row.input_ids,
        labels=torch.full_like(row.labels, IGNORE_INDEX),
        position_ids=row.position_ids,
        num_documents=0,
        num_real_tokens=0,
    )


def rank_eval_batches(
    rows: list[PackedSequence],
    micro_batch_size: int,
    ctx: DistContext,
    layout: SequenceLayout | None = None,
) -> list[Batch]:
    """This rank's share of `rows` as micro-batches; every rank gets the same batch count.

    Under sequence parallelism the rows are shared out over data ranks and every rank of a
    sequence group gets the same rows (each then evaluates its slice of them)."""
    if not rows:
        raise ValueError("validation data packs into no sequences")
    shares, share = (
        (layout.data_parallel, layout.data_rank) if layout else (ctx.world_size, ctx.rank)
    )
    per_rank = math.ceil(len(rows) / shares)
    mine = rows[share::shares]
    mine = mine + [_ignored_copy(rows[0])] * (per_rank - len(mine))
    return [
        collate(mine[start : start + micro_batch_size])
        for start in range(0, per_rank, micro_batch_size)
    ]


@torch.no_grad()
def evaluate(
    engine: nn.Module,
    batches: list[Batch],
    ctx: DistContext,
    forward_context: Callable[[], AbstractContextManager],
    layout: SequenceLayout | None = None,
) -> EvalOutcome:
    """Mean validation loss of `engine` (a CausalLMObjective, possibly DDP/FSDP-wrapped).

    Switches to eval mode (no dropout) and back to train mode: callers evaluate mid-training.
    """
    engine.eval()
    try:
        loss_sum = torch.zeros((), device=ctx.device, dtype=torch.float64)
        targets = torch.zeros((), device=ctx.device, dtype=torch.float64)
        for batch in batches:
            inputs, shard = prepare_batch(batch, layout)
            inputs = {k: v.to(ctx.device, non_blocking=True) for k, v in inputs.items()}
            with forward_context():
                summed = engine(
                    inputs["input_ids"],
                    inputs["position_ids"],
                    inputs["targets"],
                    sequence_shard=shard,
                )
            loss_sum += summed.detach().double()
            targets += count_targets(inputs["targets"])
        loss_sum = all_reduce_sum(loss_sum, ctx)
        targets = all_reduce_sum(targets, ctx)
    finally:
        engine.train()
    counted = int(targets.item())
    if counted == 0:
        raise ValueError("validation data has no target tokens (nothing to compute a loss on)")
    return EvalOutcome(loss=float(loss_sum.item()) / counted, target_tokens=counted)
