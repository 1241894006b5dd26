"""Gathered LoRA: every plain-LoRA adapter of a RoPE group in one set of paged buffers, and the
LoRA delta of a whole mixed batch computed as batched matmuls over gathered weights.

WHY: peft's mixed batch (`adapter_names`) loops over the adapters of a batch with row masks in
every LoRA layer, so a decode step costs more with every distinct adapter in it (4 adapters:
0.19x the single-model batch). Punica (SGMV/BGMV) and S-LoRA instead gather each row's
adapter weights and run one batched matmul per projection, whatever the number of adapters.
This module is that formulation in plain torch (it runs on CPU and, unchanged, on CUDA).

Storage — S-LoRA's unified paging, per target module of the base:

    pool.a     [P, d_in]    one rank row of some adapter's lora_A per page
    pool.b     [P, d_out]   the matching column of its lora_B, times its scaling (alpha / r,
                            or alpha / sqrt(r)) in this module, stored transposed

An adapter of rank r owns r pages, the same page ids in every pooled module; a module it does
not target keeps zeros there (a zero delta, exactly). Pages of any rank share one pool, so
adapters of different ranks never fragment it, and a batch pads only to the largest rank *in
that batch* (page 0 is never handed out, so it stays zero; padding uses it: zero rows add
exactly 0). The buffers grow on demand up to `max_bytes` and never move a resident adapter's pages,
so loading or evicting one never touches a running request.

Compute — for x [rows, S, d_in] through a pooled linear (the base projection runs first,
untouched; the delta is added in place by a forward hook):

    one adapter for all rows:  out += (x @ A^T) @ Bs            (its pages; a view if contiguous)
    adapters repeat (SGMV over rows): rows grouped by adapter, each adapter's pages gathered
        once: [D, m*S, d_in] @ [D, d_in, r] @ [D, r, d_out]  -> index_add into the rows
    otherwise (BGMV):  pages [n, r] per row with an adapter
        A = pool.a[pages] [n, r, d_in],  Bs = pool.b[pages] [n, r, d_out]
        out[rows] += (x[rows] @ A^T) @ Bs                      [n, S, d_out]
    packed prefill (SGMV): one row [1, T] of concatenated prompts, one segment per prompt
        out[s:e] += (x[s:e] @ A_seg^T) @ Bs_seg                 per segment with an adapter

Rows without an adapter are left out of the gather (the base costs nothing extra). peft
computes `lora_B(lora_A(x)) * scaling`; folding the scaling into B changes only float rounding
(~1e-7 relative), and the tests hold the result to peft's within 1e-5.

What cannot be gathered (`gather_refusal`): DoRA and other LoRA variants, modules_to_save /
trainable tokens (norms and embeddings are not low-rank deltas), LoRA on embeddings or on
parameters, biases — those adapters keep peft and a forward of their own (adapters.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

WEIGHTS_FILE = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."
_A_SUFFIX, _B_SUFFIX = ".lora_A.weight", ".lora_B.weight"
# adapter_config.json fields whose truthy value makes an adapter something other than a sum of
# plain low-rank deltas on linear layers (peft 0.21's LoraConfig).
_REFUSED_FIELDS = (
    "use_dora",
    "modules_to_save",
    "trainable_token_indices",
    "lora_bias",
    "target_parameters",
    "fan_in_fan_out",
    "alora_invocation_tokens",
    "use_qalora",
    "use_bdlora",
    "arrow_config",
    "kasa_config",
    "velora_config",
    "monteclora_config",
    "layer_replication",
    "megatron_config",
)


# --------------------------------------------------------------------------- adapter files
def gather_refusal(adapter_dir: Path) -> str | None:
    """Why the adapter at `adapter_dir` cannot be gathered (None: it can), from its files alone.

    Reads adapter_config.json and the tensor names of adapter_model.safetensors, not the
    weights. Whether every target is a linear layer of the base is checked on install."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("peft_type") != "LORA":
        return f"peft_type {config.get('peft_type')!r} is not LORA"
    for field in _REFUSED_FIELDS:
        if config.get(field):
            return f"{field} is set"
    if config.get("bias", "none") != "none":
        return f"bias {config['bias']!r}"
    if not (adapter_dir / WEIGHTS_FILE).is_file():
        return f"no {WEIGHTS_FILE}"
    from safetensors import safe_open

    with safe_open(adapter_dir / WEIGHTS_FILE, framework="pt") as handle:
        keys = list(handle.keys())
    odd = [k for k in keys if not k.endswith((_A_SUFFIX, _B_SUFFIX))]
    if odd:
        return f"tensors other than lora_A/lora_B weights (e.g. {odd[0]!r})"
    if not keys:
        return "no LoRA tensors"
    return None


@dataclass(frozen=True)
class LoraModule:
    """One target module's delta: W x + scaling * B (A x)."""

    a: torch.Tensor  # [r, d_in]
    b: torch.Tensor  # [d_out, r]
    scaling: float

    @property
    def rank(self) -> int:
        return self.a.shape[0]


@dataclass(frozen=True)
class LoraWeights:
    """A gatherable adapter read from its files (CPU tensors; safe to build off-thread)."""

    modules: dict[str, LoraModule]  # module path in the base model -> its delta

    @property
    def rank(self) -> int:
        """Pages it needs: its largest rank over its modules (rank_pattern may vary them)."""
        return max(m.rank for m in self.modules.values())


def read_lora_weights(adapter_dir: Path) -> LoraWeights:
    """The adapter's A/B tensors per module path and peft's scaling for each.

    Scaling follows peft's `update_layer`: alpha / r, or alpha / sqrt(r) with use_rslora,
    where r and alpha come from rank_pattern / alpha_pattern (peft's own key matching)."""
    from peft.utils.other import get_pattern_key
    from safetensors.torch import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    tensors = load_file(adapter_dir / WEIGHTS_FILE)
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    modules = {}
    for key in sorted(k for k in tensors if k.endswith(_A_SUFFIX)):
        path = key.removeprefix(_PEFT_PREFIX).removesuffix(_A_SUFFIX)
        a = tensors[key]
        b = tensors[key.removesuffix(_A_SUFFIX) + _B_SUFFIX]
        r = rank_pattern.get(get_pattern_key(rank_pattern.keys(), path), config["r"])
        alpha = alpha_pattern.get(get_pattern_key(alpha_pattern.keys(), path), config["lora_alpha"])
        if a.shape[0] != r or b.shape[1] != r:
            raise ValueError(
                f"{path}: lora_A {tuple(a.shape)} / lora_B {tuple(b.shape)} ≠ rank {r}"
            )
        scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        modules[path] = LoraModule(a=a, b=b, scaling=scaling)
    return LoraWeights(modules)


def weights_nbytes(weights: LoraWeights) -> int:
    return sum((m.a.numel() + m.b.numel()) * m.a.element_size() for m in weights.modules.values())


# --------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class RowPlan:
    """Per-row adapters of one forward (decode batches, or one prompt's chunk).

    rows: indices of the rows that have an adapter (None: every row has one);
    pages: [n, r] page ids per such row (0-padded to the batch's largest rank), or [r] when
    every row with an adapter has the same one (`uniform`: no per-row gather), in which case
    `span` is its pages as a contiguous range when they are one (a view, not a gather)."""

    batch_rows: int | None  # None: every row of any batch runs the one adapter
    rows: torch.Tensor | None
    pages: torch.Tensor
    uniform: bool
    span: tuple[int, int] | None = None
    grouped: GroupedRows | None = None


@dataclass(frozen=True)
class GroupedRows:
    """Rows grouped by adapter when adapters repeat in a batch (SGMV over rows): each
    adapter's pages are gathered once, not once per row.

    take: [D * m] batch rows laid out as D groups of m (short groups repeat a row);
    pages: [D, r] each group's pages; keep: [V] the real slots of the D * m (None: all);
    rows: [V] the batch row each real slot belongs to."""

    take: torch.Tensor
    pages: torch.Tensor
    keep: torch.Tensor | None
    rows: torch.Tensor


@dataclass(frozen=True)
class Segment:
    start: int
    end: int
    pages: torch.Tensor  # [r]
    span: tuple[int, int] | None


@dataclass(frozen=True)
class SegmentPlan:
    """Packed prefill: one row of concatenated prompts; token spans with an adapter."""

    tokens: int
    segments: tuple[Segment, ...]


# --------------------------------------------------------------------------- the pools
class _ModulePool:
    """The paged buffers of one target linear layer, and the hook that adds the delta."""

    def __init__(self, store: GatheredLora, linear: nn.Linear, pages: int) -> None:
        self.store = store
        self.linear = linear
        weight = linear.weight
        self.a = torch.zeros(pages, linear.in_features, dtype=weight.dtype, device=weight.device)
        self.b = torch.zeros(pages, linear.out_features, dtype=weight.dtype, device=weight.device)
        self.hook = linear.register_forward_hook(self._add_delta)

    @property
    def bytes_per_page(self) -> int:
        return (self.a.shape[1] + self.b.shape[1]) * self.a.element_size()

    def grow(self, pages: int) -> None:
        """Copy into bigger buffers (page ids, hence resident adapters, stay where they are)."""
        for name in ("a", "b"):
            old = getattr(self, name)
            new = old.new_zeros((pages, *old.shape[1:]))
            new[: old.shape[0]] = old
            setattr(self, name, new)

    def write(self, pages: torch.Tensor, module: LoraModule | None) -> None:
        """Put `module`'s rank rows into `pages` (zeros when the adapter does not target it).

        B is stored transposed and pre-multiplied by the scaling: x A^T (s B^T) is peft's
        s * B(A x) up to float rounding (~1e-7 relative), for one op less per layer."""
        self.a[pages] = 0
        self.b[pages] = 0
        if module is not None:
            r = module.rank
            self.a[pages[:r]] = module.a.to(self.a)
            self.b[pages[:r]] = (module.b.t() * module.scaling).to(self.b)

    def _pages(self, pages: torch.Tensor, span: tuple[int, int] | None):
        if span is not None:
            return self.a[span[0] : span[1]], self.b[span[0] : span[1]]  # views
        return self.a.index_select(0, pages), self.b.index_select(0, pages)

    def _add_delta(self, _module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        plan = self.store.plan
        if plan is None:
            return output
        x = args[0]
        if isinstance(plan, SegmentPlan):
            return self._add_segments(plan, x, output)
        if plan.batch_rows is not None and x.shape[0] != plan.batch_rows:
            raise ValueError(f"adapters for {plan.batch_rows} rows, batch has {x.shape[0]}")
        xs = x if plan.rows is None else x.index_select(0, plan.rows)  # [n, S, d_in]
        if plan.uniform:  # one adapter: its pages once, no per-row copy
            a, b = self._pages(plan.pages, plan.span)  # [r, d_in], [r, d_out]
            if plan.rows is None:
                out = output.view(-1, output.shape[-1])
                out.addmm_(xs.reshape(-1, xs.shape[-1]) @ a.t(), b)  # [rows*S, d_out]
                return output
            delta = (xs @ a.t()) @ b  # [n, S, d_out]
        elif plan.grouped is not None:  # SGMV over rows: one gather per adapter
            g = plan.grouped
            d, r = g.pages.shape
            a = self.a.index_select(0, g.pages.view(-1)).view(d, r, -1)  # [D, r, d_in]
            b = self.b.index_select(0, g.pages.view(-1)).view(d, r, -1)  # [D, r, d_out]
            xg = x.index_select(0, g.take).reshape(d, -1, x.shape[-1])  # [D, m*S, d_in]
            delta = torch.bmm(torch.bmm(xg, a.transpose(1, 2)), b)  # [D, m*S, d_out]
            delta = delta.reshape(g.take.numel(), *x.shape[1:-1], -1)  # [D*m, S, d_out]
            if g.keep is not None:
                delta = delta.index_select(0, g.keep)
            return output.index_add_(0, g.rows, delta)
        else:  # BGMV: every row its own adapter's pages
            n, r = plan.pages.shape
            a = self.a.index_select(0, plan.pages.view(-1)).view(n, r, -1)  # [n, r, d_in]
            b = self.b.index_select(0, plan.pages.view(-1)).view(n, r, -1)  # [n, r, d_out]
            flat = xs.reshape(n, -1, xs.shape[-1])  # [n, S, d_in]
            xa = torch.bmm(flat, a.transpose(1, 2))  # [n, S, r]
            if plan.rows is None:
                out = output.view(n, -1, output.shape[-1])
                out.baddbmm_(xa, b)  # [n, S, d_out]
                return output
            delta = torch.bmm(xa, b).view(*xs.shape[:-1], -1)
        return output.index_add_(0, plan.rows, delta)

    def _add_segments(
        self, plan: SegmentPlan, x: torch.Tensor, output: torch.Tensor
    ) -> torch.Tensor:
        if x.shape[0] != 1 or x.shape[1] != plan.tokens:
            raise ValueError(f"a packed plan of {plan.tokens} tokens, input {tuple(x.shape)}")
        for seg in plan.segments:
            a, b = self._pages(seg.pages, seg.span)
            out = output[0, seg.start : seg.end]  # [n, d_out] view
            out.addmm_(x[0, seg.start : seg.end] @ a.t(), b)
        return output


class GatheredLora:
    """The paged adapter store of one base instance (scheduler thread only).

    `max_bytes` bounds the buffers (all pooled modules, pages of every rank); `install`
    returns False when the free pages cannot hold an adapter and the bound forbids growing —
    the caller evicts and retries."""

    def __init__(self, model: nn.Module, *, max_bytes: int) -> None:
        self.model = model
        self.max_bytes = max_bytes
        self.plan: RowPlan | SegmentPlan | None = None
        self._pools: dict[str, _ModulePool] = {}
        self._capacity = 1  # pages per pool, page 0 (zeros) included
        self._free: list[int] = []
        self._pages: dict[str, torch.Tensor] = {}  # adapter -> its page ids [r]
        self._spans: dict[str, tuple[int, int] | None] = {}  # contiguous pages, if they are
        self._device = next(model.parameters()).device

    # ------------------------------------------------------------------ residency
    @property
    def adapters(self) -> list[str]:
        return list(self._pages)

    def __contains__(self, name: object) -> bool:
        return name in self._pages

    @property
    def allocated_bytes(self) -> int:
        return self._capacity * sum(p.bytes_per_page for p in self._pools.values())

    def targets(self, weights: LoraWeights) -> str | None:
        """Why `weights` cannot be pooled on this model (None: every target is an nn.Linear)."""
        for path in weights.modules:
            try:
                module = self._linear(path)
            except AttributeError:
                return f"{path} is not a module of the base"
            if type(module) is not nn.Linear:
                return f"{path} is a {type(module).__name__}, not a Linear"
        return None

    def could_fit(self, weights: LoraWeights) -> bool:
        """Whether `weights` fits within `max_bytes` once every other adapter is evicted."""
        per_page = self._per_page(weights)
        return max(self._capacity, 1 + weights.rank) * per_page <= self.max_bytes

    def install(self, name: str, weights: LoraWeights) -> bool:
        """Copy `weights` into free pages (growing the pools within `max_bytes`)."""
        if name in self._pages:
            raise ValueError(f"adapter {name!r} is already resident")
        if not self._reserve(weights):
            return False
        taken = self._take(weights.rank)
        pages = torch.tensor(taken, device=self._device)
        for path, pool in self._pools.items():
            pool.write(pages, weights.modules.get(path))
        self._pages[name] = pages
        contiguous = taken == list(range(taken[0], taken[0] + len(taken)))
        self._spans[name] = (taken[0], taken[0] + len(taken)) if contiguous else None
        return True

    def _take(self, count: int) -> list[int]:
        """`count` free pages: the first contiguous run when there is one (the single-adapter
        paths then read a view instead of gathering), else the lowest free ones."""
        free = self._free  # sorted
        for i in range(len(free) - count + 1):
            if free[i + count - 1] - free[i] == count - 1:
                taken = free[i : i + count]
                del free[i : i + count]
                return taken
        taken = free[:count]
        del free[:count]
        return taken

    def evict(self, name: str) -> None:
        """Free `name`'s pages (zeroed at the next install that takes them)."""
        self._free.extend(self._pages.pop(name).tolist())
        self._spans.pop(name, None)
        self._free.sort()

    def close(self) -> None:
        """Remove the hooks and buffers: the model is left as it was given."""
        for pool in self._pools.values():
            pool.hook.remove()
        self._pools.clear()
        self._pages.clear()
        self._free.clear()
        self._capacity = 1

    def _reserve(self, weights: LoraWeights) -> bool:
        need_pages = max(0, weights.rank - len(self._free))
        new_modules = [p for p in weights.modules if p not in self._pools]
        if not need_pages and not new_modules:
            return True
        per_page = self._per_page(weights)
        wanted = self._capacity + need_pages
        if wanted * per_page > self.max_bytes:
            return False
        # Grow geometrically (amortized copies), but never past the bound.
        grown = max(wanted, min(2 * self._capacity, self.max_bytes // per_page))
        for path in new_modules:
            self._pools[path] = _ModulePool(self, self._linear(path), self._capacity)
        if grown > self._capacity:
            for pool in self._pools.values():
                pool.grow(grown)
            self._free.extend(range(self._capacity, grown))
            self._capacity = grown
        return True

    def _per_page(self, weights: LoraWeights) -> int:
        """Bytes of one page over the pools that exist plus those `weights` would add."""
        return sum(p.bytes_per_page for p in self._pools.values()) + sum(
            _page_bytes(self._linear(p)) for p in weights.modules if p not in self._pools
        )

    def _linear(self, path: str) -> nn.Module:
        module = self.model.get_submodule(path)
        # A peft wrapper (a fallback adapter also targets this layer): pool the layer inside.
        get_base_layer = getattr(module, "get_base_layer", None)
        return get_base_layer() if get_base_layer is not None else module

    # ------------------------------------------------------------------ plans
    def row_plan(self, adapters: Sequence[str | None]) -> RowPlan | None:
        """The plan for a batch whose row i runs adapters[i] (None: the base); None when no
        row has an adapter (the plain base forward). One name and no base row: that adapter
        for every row, whatever the batch size."""
        rows = [i for i, a in enumerate(adapters) if a is not None]
        if not rows:
            return None
        names = [adapters[i] for i in rows]
        per_row = [self._pages[n] for n in names]  # KeyError: not resident here
        device = self._device
        index = None if len(rows) == len(adapters) else torch.tensor(rows, device=device)
        if len(set(names)) == 1:
            batch_rows = None if index is None else len(adapters)
            return RowPlan(batch_rows, index, per_row[0], True, self._spans[names[0]])
        width = max(p.numel() for p in per_row)
        groups: dict[str, list[int]] = {}
        for row, name in zip(rows, names, strict=True):
            groups.setdefault(name, []).append(row)
        if 2 * len(groups) <= len(rows):  # adapters repeat: gather each one once
            return RowPlan(len(adapters), index, per_row[0], False, grouped=self._group(groups))
        pages = torch.zeros(len(rows), width, dtype=torch.long, device=device)
        for i, p in enumerate(per_row):
            pages[i, : p.numel()] = p
        return RowPlan(len(adapters), index, pages, False)

    def _group(self, groups: dict[str, list[int]]) -> GroupedRows:
        m = max(len(g) for g in groups.values())
        width = max(self._pages[name].numel() for name in groups)
        pages = torch.zeros(len(groups), width, dtype=torch.long, device=self._device)
        take, keep, rows = [], [], []
        for k, (name, members) in enumerate(groups.items()):
            own = self._pages[name]
            pages[k, : own.numel()] = own
            take += members + [members[0]] * (m - len(members))
            keep += range(k * m, k * m + len(members))
            rows += members
        device = self._device
        return GroupedRows(
            take=torch.tensor(take, device=device),
            pages=pages,
            keep=None if len(keep) == len(take) else torch.tensor(keep, device=device),
            rows=torch.tensor(rows, device=device),
        )

    def segment_plan(
        self, adapters: Sequence[str | None], lengths: Sequence[int]
    ) -> SegmentPlan | None:
        """The plan of a packed row: prompt k's `lengths[k]` tokens run adapters[k]."""
        segments, start = [], 0
        for adapter, length in zip(adapters, lengths, strict=True):
            if adapter is not None:
                pages = self._pages[adapter]
                segments.append(Segment(start, start + length, pages, self._spans[adapter]))
            start += length
        return SegmentPlan(start, tuple(segments)) if segments else None

    @contextmanager
    def using(self, plan: RowPlan | SegmentPlan | None) -> Iterator[None]:
        """Apply `plan` to the forwards run inside (cleared even when the forward raises)."""
        self.plan = plan
        try:
            yield
        finally:
            self.plan = None


def _page_bytes(linear: nn.Module) -> int:
    weight = linear.weight
    return (linear.in_features + linear.out_features) * weight.element_size()
