"""Sequence parallelism: one packed row split over N ranks, attention still exact.

WHY: activation checkpointing, the tiled MLP and the chunked loss make one layer lean, but
every rank still holds the whole sequence: the checkpointed hidden states of every layer and
one layer's recompute grow with L. Past one accelerator's memory (150K–1M tokens) the only way
on is to cut the sequence itself. Every per-token part of the model (embedding, norms, MLP, the
RoPE rotation from each token's own position id, the LM head and its loss) is unchanged on a
slice; attention is the one operation that mixes tokens, and it is made exact two ways:

  Ulysses (DeepSpeed-Ulysses; Arctic Long Sequence Training): an all-to-all turns q/k/v from
      [all heads × my L/N tokens] into [my H/N heads × all L tokens]; each rank runs the
      ordinary per-document causal kernel (attention.varlen_attention: flash-attn varlen on
      CUDA) on its heads, and a second all-to-all turns the output back.
  Ring (Liu et al.'s ring attention; the ring-flash-attn project): each rank keeps its queries
      and passes its K/V block around the ring; every block yields a partial output and
      log-sum-exp, merged exactly (attention.merge_attention_partials' rule). The backward pass
      sends the blocks around again, with their K/V gradients travelling along.

Which one: `contract.resolve_sequence_parallel_mode` (Ulysses whenever the heads split over N;
its docstring gives the communication argument). How a row is cut: Ulysses takes contiguous
slices (after the all-to-all every rank sees the whole row, so balance is automatic); ring
takes the zig-zag slices (rank r holds chunks r and 2N−1−r of 2N): under a causal mask a
contiguous cut gives the last rank N times the work of the first, zig-zag gives every rank the
same. Both slicings work with both schemes (the tests run all four).

Packed rows: the documents of a row come from its GLOBAL position ids (a document starts where
the position is 0, attention.cu_seqlens_from_position_ids' convention), which every rank has,
so a document crossing a slice boundary is attended exactly and documents never see each
other. The next-token targets are shifted on the whole row before it is cut (the last token of
a slice predicts the first token of the next), so each rank's chunked loss covers exactly its
slice's targets and the global mean divides by the global target count (train.train_step).

Layout: the world is data_parallel × sequence_parallel ranks; consecutive ranks form one
sequence group and share the same rows. Gradients are reduced over the WHOLE world by DDP or
FSDP as without sequence parallelism: each rank's gradient is the sum over its slice's tokens,
so the world sum is the sum over every token of every row, which is the single-process step.

The process-group objects never enter the autograd graph; all communication is
torch.distributed (all_to_all_single, batched isend/irecv), gloo on CPU and NCCL on GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import torch
import torch.distributed as dist

from gpu_runtime.attention import (
    flash_attn_available,
    varlen_attention,
    varlen_mask,
    varlen_sdpa_attention_forward,
)
from gpu_runtime.contract import RING, ULYSSES, resolve_sequence_parallel_mode
from gpu_runtime.distributed import DistContext
from gpu_runtime.loss import IGNORE_INDEX, shift_labels

# The attn_implementation a sequence-parallel model runs with (registered below). Without a
# SequenceShard in the call (evaluation of a full row, generation) it is the varlen kernel.
SEQUENCE_PARALLEL_ATTENTION = "longtune_sequence_parallel"
CONTIGUOUS, ZIGZAG = "contiguous", "zigzag"


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class SequenceLayout:
    """Where this rank sits in the data × sequence grid.

    Ranks [d·N, (d+1)·N) form sequence group d; `group` is that group's process group (None
    when N == 1). The data loader shards rows over `data_parallel` ranks by `data_rank`.
    """

    degree: int  # N = sequence_parallel
    rank: int  # position inside the sequence group, 0..N-1
    data_parallel: int
    data_rank: int
    group: Any = None  # torch.distributed ProcessGroup of this rank's sequence group
    global_ranks: tuple[int, ...] = (0,)  # world ranks of the group, in group order
    mode: str = ULYSSES  # the resolved attention scheme: "ulysses" | "ring"

    @property
    def enabled(self) -> bool:
        return self.degree > 1

    def peer(self, offset: int) -> int:
        """World rank of the group member `offset` places after this one on the ring."""
        return self.global_ranks[(self.rank + offset) % self.degree]


def init_sequence_layout(ctx: DistContext, degree: int) -> SequenceLayout:
    """Split the world into sequence groups of `degree` consecutive ranks (collective: every
    rank creates every group, as torch.distributed.new_group requires)."""
    if degree < 1:
        raise ValueError("sequence_parallel: must be >= 1")
    if ctx.world_size % degree:
        raise ValueError(
            f"sequence_parallel: {degree} does not divide the world size {ctx.world_size}"
        )
    data_parallel = ctx.world_size // degree
    data_rank, rank = divmod(ctx.rank, degree)
    if degree == 1:
        return SequenceLayout(1, 0, data_parallel, data_rank, None, (ctx.rank,))
    mine = None
    for group_index in range(data_parallel):
        ranks = list(range(group_index * degree, (group_index + 1) * degree))
        group = dist.new_group(ranks)  # a group of its own even when it is the whole world
        if group_index == data_rank:
            mine = (group, tuple(ranks))
    assert mine is not None
    return SequenceLayout(degree, rank, data_parallel, data_rank, mine[0], mine[1])


# --------------------------------------------------------------------------- slicing


def slice_chunks(length: int, degree: int, rank: int, slicing: str) -> list[tuple[int, int]]:
    """The [start, end) token ranges of a row of `length` that `rank` holds, in local order.

    contiguous: one range of length/N. zigzag: chunks rank and 2N−1−rank of length/(2N).
    """
    if slicing == CONTIGUOUS:
        if length % degree:
            raise ValueError(f"a row of {length} tokens does not split into {degree} slices")
        size = length // degree
        return [(rank * size, (rank + 1) * size)]
    if slicing == ZIGZAG:
        if length % (2 * degree):
            raise ValueError(f"a row of {length} tokens does not split into {2 * degree} chunks")
        size = length // (2 * degree)
        mirror = 2 * degree - 1 - rank
        return [(rank * size, (rank + 1) * size), (mirror * size, (mirror + 1) * size)]
    raise ValueError(f"unknown slicing {slicing!r}")


def slice_indices(length: int, degree: int, rank: int, slicing: str) -> torch.Tensor:
    """Global token indices (long [length/N]) of `rank`'s slice, in local order."""
    return torch.cat(
        [torch.arange(start, end) for start, end in slice_chunks(length, degree, rank, slicing)]
    )


def slicing_for(mode: str) -> str:
    """Ring attention is load-balanced only with zig-zag slices; Ulysses needs no balancing."""
    return ZIGZAG if mode == RING else CONTIGUOUS


@dataclass(frozen=True)
class _Segment:
    """The part of one document inside one contiguous chunk of one rank's slice."""

    row: int
    local_start: int  # in the rank's local token order
    local_end: int
    global_start: int  # in the row
    document: int


class SequenceShard:
    """What a sequence-parallel forward needs to know about the current micro-batch.

    A plain class (not a dataclass) on purpose: FSDP's input casting walks dataclasses and
    DDP moves their tensors; this object must reach the attention function untouched. Built
    by `shard_batch`; handed to the decoder as a keyword argument, which transformers passes
    to every attention call (and activation checkpointing keeps for the recompute).
    """

    def __init__(
        self,
        layout: SequenceLayout,
        global_position_ids: torch.Tensor,  # [B, L] the whole rows' position ids
        slicing: str | None = None,  # default: the layout's mode decides (slicing_for)
    ) -> None:
        self.layout = layout
        self.mode = layout.mode
        self.slicing = slicing or slicing_for(layout.mode)
        self._pairs: dict[int, list[tuple[int, int, int, int, int, bool]]] = {}
        self.global_position_ids = global_position_ids
        self.length = int(global_position_ids.shape[1])

    @cached_property
    def order(self) -> torch.Tensor:
        """Global index of each token of the ranks' slices concatenated in rank order [L]."""
        return torch.cat(
            [
                slice_indices(self.length, self.layout.degree, rank, self.slicing)
                for rank in range(self.layout.degree)
            ]
        )

    @cached_property
    def inverse_order(self) -> torch.Tensor:
        """x_global = x_concatenated[:, :, inverse_order] (identity for contiguous slices)."""
        return torch.argsort(self.order)

    @cached_property
    def documents(self) -> torch.Tensor:
        """Document number of every token of every row [B, L] (a new one where position is 0)."""
        starts = self.global_position_ids == 0
        starts[:, 0] = True
        return starts.long().cumsum(dim=1)

    def segments(self, rank: int) -> list[_Segment]:
        """Rank `rank`'s slice cut at document and chunk boundaries, every row."""
        documents = self.documents.cpu()
        found: list[_Segment] = []
        chunks = slice_chunks(self.length, self.layout.degree, rank, self.slicing)
        for row in range(documents.shape[0]):
            local = 0
            for start, end in chunks:
                docs = documents[row, start:end]
                cuts = [0, *((docs[1:] != docs[:-1]).nonzero().view(-1) + 1).tolist(), end - start]
                for a, b in zip(cuts[:-1], cuts[1:], strict=True):
                    found.append(
                        _Segment(row, local + a, local + b, start + a, int(docs[a].item()))
                    )
                local += end - start
        return found

    @cached_property
    def _segments_by_rank(self) -> list[list[_Segment]]:
        return [self.segments(rank) for rank in range(self.layout.degree)]

    def block_pairs(self, source: int) -> list[tuple[int, int, int, int, int, bool]]:
        """(row, q_start, q_end, k_start, k_end, causal) of this rank's queries against rank
        `source`'s keys, local coordinates on both sides.

        Two segments of the same document either cover the same chunk (then they are the same
        tokens: causal), or one chunk lies wholly before the other (keys before the queries:
        every key visible; keys after: none). Different documents never attend.
        """
        if source in self._pairs:
            return self._pairs[source]
        pairs = self._pairs[source] = []
        for q in self._segments_by_rank[self.layout.rank]:
            for k in self._segments_by_rank[source]:
                if k.row != q.row or k.document != q.document:
                    continue
                if k.global_start == q.global_start:
                    pairs.append(
                        (q.row, q.local_start, q.local_end, k.local_start, k.local_end, True)
                    )
                elif k.global_start < q.global_start:
                    pairs.append(
                        (q.row, q.local_start, q.local_end, k.local_start, k.local_end, False)
                    )
        return pairs


def shard_batch(
    batch: dict[str, torch.Tensor], layout: SequenceLayout, slicing: str | None = None
) -> tuple[dict[str, torch.Tensor], SequenceShard]:
    """This rank's slice of a collated micro-batch, and the shard describing it.

    batch: input_ids / labels / position_ids [B, L] (+ real_tokens [B]), identical on every
    rank of the sequence group. Returns input_ids / position_ids / targets [B, L/N] and
    real_tokens [B]; `targets` are the next-token targets shifted on the WHOLE row (so the
    slice's last token predicts the next slice's first), never shifted again.
    """
    shard = SequenceShard(layout, batch["position_ids"], slicing)
    length = batch["input_ids"].shape[1]
    index = slice_indices(length, layout.degree, layout.rank, shard.slicing)  # [L/N]
    targets = shift_labels(batch["labels"])  # [B, L]
    local = {
        "input_ids": batch["input_ids"][:, index],
        "position_ids": batch["position_ids"][:, index],
        "targets": targets[:, index],
    }
    if "real_tokens" in batch:  # padding is each row's tail (packing.py): count what we hold
        local["real_tokens"] = (index[None, :] < batch["real_tokens"][:, None]).sum(dim=1)
    return local, shard


def prepare_batch(
    batch: dict[str, torch.Tensor], layout: SequenceLayout | None
) -> tuple[dict[str, torch.Tensor], SequenceShard | None]:
    """What the objective consumes: input_ids / position_ids / targets (+ real_tokens), the
    rank's slice under sequence parallelism, the whole rows (and no shard) otherwise."""
    if layout is not None and layout.enabled:
        return shard_batch(batch, layout)
    local = {
        "input_ids": batch["input_ids"],
        "position_ids": batch["position_ids"],
        "targets": shift_labels(batch["labels"]),
    }
    if "real_tokens" in batch:
        local["real_tokens"] = batch["real_tokens"]
    return local, None


def count_targets(targets: torch.Tensor) -> int:
    """Tokens a (shifted) target tensor trains on."""
    return int((targets != IGNORE_INDEX).sum())


# --------------------------------------------------------------------------- Ulysses


class _AllToAll(torch.autograd.Function):
    """all_to_all_single over dim 0 in equal splits; its own transpose, so backward is the
    same exchange of the gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        return _all_to_all(tensor, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _all_to_all(grad, ctx.group), None


def _all_to_all(tensor: torch.Tensor, group: Any) -> torch.Tensor:
    """The collective on row-major buffers (it copies raw memory: strides must be plain)."""
    tensor = tensor.contiguous()
    out = torch.empty(tensor.shape, dtype=tensor.dtype, device=tensor.device)
    dist.all_to_all_single(out, tensor, group=group)
    return out


def sequence_to_heads(x: torch.Tensor, shard: SequenceShard) -> torch.Tensor:
    """[B, H, L/N, D] (all heads, my tokens) → [B, H/N, L, D] (my heads, all tokens, row order)."""
    degree = shard.layout.degree
    batch, heads, local, dim = x.shape
    parts = x.reshape(batch, degree, heads // degree, local, dim).transpose(
        0, 1
    )  # [N, B, H/N, l, D]
    parts = _AllToAll.apply(parts, shard.layout.group)  # parts[s] = rank s's tokens, my heads
    gathered = parts.permute(1, 2, 0, 3, 4).reshape(batch, heads // degree, degree * local, dim)
    if shard.slicing == CONTIGUOUS:
        return gathered
    return gathered.index_select(2, shard.inverse_order.to(x.device))


def heads_to_sequence(x: torch.Tensor, shard: SequenceShard) -> torch.Tensor:
    """Inverse of `sequence_to_heads`: [B, H/N, L, D] → [B, H, L/N, D]."""
    degree = shard.layout.degree
    batch, head_group, length, dim = x.shape
    if shard.slicing != CONTIGUOUS:
        x = x.index_select(2, shard.order.to(x.device))
    local = length // degree
    parts = x.reshape(batch, head_group, degree, local, dim).permute(
        2, 0, 1, 3, 4
    )  # [N, B, h, l, D]
    parts = _AllToAll.apply(parts, shard.layout.group)  # parts[s] = head group s, my tokens
    return parts.transpose(0, 1).reshape(batch, degree * head_group, local, dim)


def repeat_kv_heads(x: torch.Tensor, times: int) -> torch.Tensor:
    """[B, Hkv, L, D] → [B, Hkv·times, L, D], query head h reading KV head h // G as before."""
    return x if times == 1 else x.repeat_interleave(times, dim=1)


def ulysses_attention(
    query: torch.Tensor,  # [B, Hq, L/N, D]
    key: torch.Tensor,  # [B, Hkv, L/N, D]
    value: torch.Tensor,  # [B, Hkv, L/N, D]
    shard: SequenceShard,
    *,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
) -> torch.Tensor:  # [B, L/N, Hq, D]
    """Exact per-document causal attention of the whole rows, computed on H/N heads per rank."""
    degree = shard.layout.degree
    q_heads, kv_heads = query.shape[1], key.shape[1]
    if kv_heads % degree:  # fewer KV heads than ranks: each rank gets a copy of its group's
        times = math.lcm(kv_heads, degree) // kv_heads
        key, value = repeat_kv_heads(key, times), repeat_kv_heads(value, times)
    q = sequence_to_heads(query, shard)  # [B, Hq/N, L, D]
    k = sequence_to_heads(key, shard)  # [B, Hkv'/N, L, D]
    v = sequence_to_heads(value, shard)
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"{q_heads} query heads do not group over {key.shape[1]} KV heads")
    out = varlen_attention(
        q,
        k,
        v,
        shard.global_position_ids.to(query.device),
        scaling=scaling,
        dropout=dropout,
        sliding_window=sliding_window,
    )  # [B, L, Hq/N, D]
    out = heads_to_sequence(out.transpose(1, 2), shard)  # [B, Hq, L/N, D]
    return out.transpose(1, 2).contiguous()


# --------------------------------------------------------------------------- ring: kernels
#
# One "pair" is a block of queries against a block of keys that is either wholly visible
# (causal=False) or the same tokens under the causal mask (causal=True, square). Each kernel
# returns the block's output and per-query log-sum-exp; the backward takes the FINAL output
# and log-sum-exp (over every block), which is what makes per-block gradients exact — the
# same trick flash-attention's own backward and ring-flash-attn use.


def _acc(t: torch.Tensor) -> torch.Tensor:
    """At least fp32 (fp64 stays fp64): softmax statistics and gradient sums."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _math_forward(q, k, v, causal: bool, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference kernel, any device: q [B, H, m, D], k/v [B, H, n, D] → out, lse (>= fp32)."""
    scores = torch.matmul(_acc(q), _acc(k).transpose(-1, -2)) * scale  # [B, H, m, n]
    if causal:
        mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # [B, H, m]
    out = torch.matmul(torch.exp(scores - lse.unsqueeze(-1)), _acc(v))
    return out, lse


def _math_backward(dout, q, k, v, out, lse, causal: bool, scale: float):
    """dq, dk, dv of one block given the final out/lse of its queries (>= fp32)."""
    scores = torch.matmul(_acc(q), _acc(k).transpose(-1, -2)) * scale
    if causal:
        mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.exp(scores - _acc(lse).unsqueeze(-1))  # [B, H, m, n]
    dout = _acc(dout)
    dv = torch.matmul(probs.transpose(-1, -2), dout)
    dprobs = torch.matmul(dout, _acc(v).transpose(-1, -2))
    delta = (dout * _acc(out)).sum(-1, keepdim=True)  # [B, H, m, 1]
    dscores = probs * (dprobs - delta) * scale
    return torch.matmul(dscores, _acc(k)), torch.matmul(dscores.transpose(-1, -2), _acc(q)), dv


def _cpu_forward(q, k, v, causal: bool, scale: float):
    """torch's CPU flash kernel: memory O(block), returns the log-sum-exp."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, 0.0, causal, scale=scale
    )[:2]
    return _acc(out), _acc(lse)


def _cpu_backward(dout, q, k, v, out, lse, causal: bool, scale: float):
    """The CPU flash kernel's block backward. Its log-sum-exp stays in the accumulation dtype
    (what its forward returns: fp32 for bf16/fp16 inputs); cast to a 16-bit q dtype the
    kernel refuses it ("expected scalar type Float but found BFloat16")."""
    dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        dout.to(q.dtype),
        q,
        k,
        v,
        out.to(q.dtype),
        lse.to(torch.promote_types(q.dtype, torch.float32)),
        0.0,
        causal,
        scale=scale,
    )
    return _acc(dq), _acc(dk), _acc(dv)


def _flash_forward(q, k, v, causal: bool, scale: float):
    """flash-attn's kernels (CUDA, fp16/bf16); [B, H, n, D] ↔ flash's [B, n, H, D]."""
    from flash_attn.flash_attn_interface import flash_attn_func

    out, lse, _ = flash_attn_func(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        softmax_scale=scale,
        causal=causal,
        return_attn_probs=True,
    )  # out [B, m, H, D], lse [B, H, m]
    return out.transpose(1, 2).float(), lse.float()


def _flash_backward(dout, q, k, v, out, lse, causal: bool, scale: float):
    """flash-attn's block backward given the final out/lse. Its private `_flash_attn_backward`
    spells the window as one `window_size` tuple up to 2.6 and as `window_size_left/right`
    from 2.7; the keywords are chosen from its signature."""
    import inspect

    from flash_attn.flash_attn_interface import _flash_attn_backward

    qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))  # [B, n, H, D]
    dq, dk, dv = torch.empty_like(qt), torch.empty_like(kt), torch.empty_like(vt)
    accepted = inspect.signature(_flash_attn_backward).parameters
    options: dict[str, Any] = {
        "dropout_p": 0.0,
        "softmax_scale": scale,
        "causal": causal,
        "alibi_slopes": None,
        "deterministic": False,
    }
    if "window_size_left" in accepted:
        options.update(window_size_left=-1, window_size_right=-1)
    else:
        options["window_size"] = (-1, -1)
    if "softcap" in accepted:
        options["softcap"] = 0.0
    _flash_attn_backward(
        dout.to(q.dtype).transpose(1, 2).contiguous(),
        qt,
        kt,
        vt,
        out.to(q.dtype).transpose(1, 2).contiguous(),
        lse.float().contiguous(),
        dq,
        dk,
        dv,
        **{key: value for key, value in options.items() if key in accepted},
    )
    return tuple(t.transpose(1, 2).float() for t in (dq, dk, dv))


@dataclass(frozen=True)
class RingKernels:
    forward: Any
    backward: Any
    name: str


MATH_KERNELS = RingKernels(_math_forward, _math_backward, "math")
CPU_KERNELS = RingKernels(_cpu_forward, _cpu_backward, "cpu_flash")
FLASH_KERNELS = RingKernels(_flash_forward, _flash_backward, "flash_attn")


def ring_kernels_for(tensor: torch.Tensor) -> RingKernels:
    """CPU: torch's CPU flash kernel. CUDA: flash-attn in fp16/bf16 when it imports; else the
    math kernel (exact, but it materialises one block's scores: for tests and fp32 only)."""
    if tensor.device.type == "cpu":
        return CPU_KERNELS
    if tensor.dtype in (torch.float16, torch.bfloat16) and flash_attn_available():
        return FLASH_KERNELS
    return MATH_KERNELS


# --------------------------------------------------------------------------- ring: the ring


def _exchange(tensor: torch.Tensor, layout: SequenceLayout) -> tuple[torch.Tensor, list[Any]]:
    """Start sending `tensor` to the next rank of the ring and receiving the previous one's."""
    received = torch.empty_like(tensor)
    ops = [
        dist.P2POp(dist.isend, tensor, layout.peer(1), layout.group),
        dist.P2POp(dist.irecv, received, layout.peer(-1), layout.group),
    ]
    return received, dist.batch_isend_irecv(ops)


def _wait(requests: list[Any]) -> None:
    for request in requests:
        request.wait()


def _merge_into(out, lse, block_out, block_lse) -> None:
    """In place: softmax over the union of the keys seen so far and this block's."""
    merged = torch.logaddexp(lse, block_lse)
    out.mul_(torch.exp(lse - merged).unsqueeze(-1)).add_(
        block_out * torch.exp(block_lse - merged).unsqueeze(-1)
    )
    lse.copy_(merged)


class _RingAttention(torch.autograd.Function):
    """Exact attention of this rank's queries over every rank's keys, one K/V block at a time.

    q/k/v: [B, H, l, D] with the same H (KV heads repeated by the caller). Step j uses the
    block of rank (r − j) mod N while the next one is in flight.
    """

    @staticmethod
    def forward(ctx, q, k, v, shard: SequenceShard, scale: float, kernels: RingKernels):
        layout = shard.layout
        acc = torch.promote_types(q.dtype, torch.float32)  # fp32 accumulators (fp64 stays)
        out = torch.zeros(q.shape, dtype=acc, device=q.device)  # [B, H, l, D]
        lse = torch.full(q.shape[:-1], float("-inf"), dtype=acc, device=q.device)
        block = torch.stack([k, v]).contiguous()  # [2, B, H, l, D]
        for step in range(layout.degree):
            source = (layout.rank - step) % layout.degree
            pending = _exchange(block, layout) if step < layout.degree - 1 else None
            for row, q0, q1, k0, k1, causal in shard.block_pairs(source):
                rows = slice(row, row + 1)
                block_out, block_lse = kernels.forward(
                    q[rows, :, q0:q1],
                    block[0, rows, :, k0:k1],
                    block[1, rows, :, k0:k1],
                    causal,
                    scale,
                )
                _merge_into(out[rows, :, q0:q1], lse[rows, :, q0:q1], block_out, block_lse)
            if pending is not None:
                _wait(pending[1])
                block = pending[0]
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.shard, ctx.scale, ctx.kernels = shard, scale, kernels
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        shard, scale, kernels = ctx.shard, ctx.scale, ctx.kernels
        layout = shard.layout
        acc = torch.promote_types(q.dtype, torch.float32)
        dq = torch.zeros(q.shape, dtype=acc, device=q.device)
        block = torch.stack([k, v]).contiguous()  # [2, B, H, l, D]
        block_grad = torch.zeros(block.shape, dtype=acc, device=q.device)
        for step in range(layout.degree):
            source = (layout.rank - step) % layout.degree
            pending = _exchange(block, layout) if step < layout.degree - 1 else None
            for row, q0, q1, k0, k1, causal in shard.block_pairs(source):
                rows = slice(row, row + 1)
                grads = kernels.backward(
                    dout[rows, :, q0:q1],
                    q[rows, :, q0:q1],
                    block[0, rows, :, k0:k1],
                    block[1, rows, :, k0:k1],
                    out[rows, :, q0:q1],
                    lse[rows, :, q0:q1],
                    causal,
                    scale,
                )
                dq_part, dk_part, dv_part = grads
                dq[rows, :, q0:q1] += dq_part
                block_grad[0, rows, :, k0:k1] += dk_part
                block_grad[1, rows, :, k0:k1] += dv_part
            # The block's gradient travels with it: the next rank handles the same block next
            # step, and after the last step it arrives back at the block's owner.
            if layout.degree > 1:
                block_grad, grad_requests = _exchange(block_grad, layout)
                _wait(grad_requests)
            if pending is not None:
                _wait(pending[1])
                block = pending[0]
        dk, dv = block_grad[0].to(k.dtype), block_grad[1].to(v.dtype)
        return dq.to(q.dtype), dk, dv, None, None, None


def ring_attention(
    query: torch.Tensor,  # [B, Hq, L/N, D]
    key: torch.Tensor,  # [B, Hkv, L/N, D]
    value: torch.Tensor,  # [B, Hkv, L/N, D]
    shard: SequenceShard,
    *,
    scaling: float | None = None,
    kernels: RingKernels | None = None,
) -> torch.Tensor:  # [B, L/N, Hq, D]
    """Exact per-document causal attention over the whole rows, K/V passed around the ring."""
    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv_heads(key, groups), repeat_kv_heads(value, groups)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out = _RingAttention.apply(
        query.contiguous(),
        key.contiguous(),
        value.contiguous(),
        shard,
        scale,
        kernels or ring_kernels_for(query),
    )  # [B, Hq, L/N, D]
    return out.transpose(1, 2).contiguous()


# --------------------------------------------------------------------------- transformers glue


def sequence_parallel_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,  # [B, Hq, L/N, D]
    key: torch.Tensor,  # [B, Hkv, L/N, D]
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    sequence_shard: SequenceShard | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """AttentionInterface entry: the sequence-parallel schemes when the call carries a shard,
    LongTune's varlen attention otherwise (a full row on one rank)."""
    if sequence_shard is None or not sequence_shard.layout.enabled:
        return varlen_sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    if attention_mask is not None:
        raise ValueError("sequence-parallel attention takes packed rows, not a padding mask")
    if sequence_shard.mode == ULYSSES:
        out = ulysses_attention(
            query,
            key,
            value,
            sequence_shard,
            scaling=scaling,
            dropout=dropout,
            sliding_window=kwargs.get("sliding_window"),
        )
        return out, None
    if dropout and module.training:
        raise ValueError("ring attention does not implement attention dropout")
    if kwargs.get("sliding_window") is not None:
        raise ValueError("ring attention does not implement sliding-window attention")
    return ring_attention(query, key, value, sequence_shard, scaling=scaling), None


def register_sequence_parallel_attention() -> None:
    """Make SEQUENCE_PARALLEL_ATTENTION usable as attn_implementation (idempotent)."""
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(SEQUENCE_PARALLEL_ATTENTION, sequence_parallel_attention_forward)
    AttentionMaskInterface.register(SEQUENCE_PARALLEL_ATTENTION, varlen_mask)


register_sequence_parallel_attention()


def enable_sequence_parallel(
    causal_lm: torch.nn.Module, layout: SequenceLayout, mode: str
) -> SequenceLayout:
    """Switch a loaded *ForCausalLM to the sequence-parallel attention; returns the layout
    with its mode resolved by `contract.resolve_sequence_parallel_mode` (ValueError naming
    `sequence_parallel_mode` when the heads do not allow the one asked for)."""
    config = causal_lm.config
    resolved = resolve_sequence_parallel_mode(
        mode,
        layout.degree,
        int(config.num_attention_heads),
        int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads),
    )
    if layout.enabled:
        if hasattr(causal_lm, "set_attn_implementation"):
            causal_lm.set_attn_implementation(SEQUENCE_PARALLEL_ATTENTION)
        else:
            config._attn_implementation = SEQUENCE_PARALLEL_ATTENTION
    return replace(layout, mode=resolved)


def describe(layout: SequenceLayout) -> dict[str, Any]:
    """The layout as the `model_ready` event reports it (visible in a job's events)."""
    return {
        "sequence_parallel": layout.degree,
        "data_parallel": layout.data_parallel,
        "sequence_parallel_mode": layout.mode if layout.enabled else None,
        "sequence_slicing": slicing_for(layout.mode) if layout.enabled else None,
    }


__all__: Sequence[str] = (
    "CONTIGUOUS",
    "SEQUENCE_PARALLEL_ATTENTION",
    "ZIGZAG",
    "SequenceLayout",
    "SequenceShard",
    "count_targets",
    "describe",
    "enable_sequence_parallel",
    "init_sequence_layout",
    "prepare_batch",
    "ring_attention",
    "shard_batch",
    "slice_chunks",
    "slice_indices",
    "ulysses_attention",
)
