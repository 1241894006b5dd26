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

Compute — once per forward a `GatherPlan` lays the batch out (every pooled module reads it):
units are the rows of x [B, S, d_in], or the tokens of a packed prefill row [1, T]; the units
with an adapter are selected (a range, or an index when base rows sit between them) and cut
into G groups of m units with one adapter's pages each, pages [G, r]. The forward hook then
adds the delta after the base projection (which runs untouched):

    A^T = pool.a[pages]^T [G, d_in, r],  Bs = pool.b[pages] [G, r, d_out]
    xa  = bmm(x_sel.view(G, m*S, d_in), A^T)        [G, m*S, r]
    out_sel.view(G, m*S, d_out).baddbmm_(xa, Bs)    in place

That is the whole delta — two ops per module, nothing gathered or scattered — whenever the
selection already is the layout: one adapter (G = 1; its pages are a view of the pool when
contiguous), or runs of each adapter cut in equal groups. The engine sorts a decode batch's
rows and a packed row's prompts by adapter (base first) so that round-robin traffic is
exactly that. Otherwise (unequal runs) the units are taken into G groups of m = ceil(n / D)
(G <= 2D, at most 2n slots; padding repeats a unit) and the delta is found back per unit
(`take` / `slots`, two index_selects and an add). Modules no adapter of the plan targets
are skipped. Decode plans are cached by the batch's adapter list with their gathered A/Bs
(LRU, `max_plan_cache_bytes` of copies), so a decode batch gathers its adapters' pages once
per membership instead of once per module per step; a packed prefill shares its gathered
copy with the decode plan of the same groups (`GatherPlan.signature`: the engine sorts both
by adapter, so an admission's prompts and the batch they join gather once, not twice);
installing or evicting an adapter clears the cache. On CPU a small delta (a decode step's,
`SERIAL_DELTA_MACS`) runs with torch's intra-op threads at 1 and puts them back: torch runs
even these tiny bmms as OpenMP regions, whose fork/join costs more than the work and, on a
shared machine, waits for a second thread to be scheduled (benchmarks/results/
gathered_delta.md); the base projections keep every thread. WHY all this: at small hidden sizes the LoRA FLOPs are a few percent of
the base's, and the cost of a mixed batch was per-module bookkeeping — per-row/page gathers,
index_add scatters, a Python loop over prompt segments — rebuilt in every module of every
step (the profile in benchmarks/results/inference.md: 2282 aten ops per 32-row decode
forward with 16 adapters before, 1467 now, the base's 1187). What is left is the bytes: a
decode step reads every adapter's A and B once (16 rank-8 adapters on all 7 layers of the
hidden-256 benchmark model: 0.8x the base's own weights); one A matmul shared by q/k/v (and
gate/up) was measured, reads the same bytes and was not faster, so it is not done.

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
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    for name in _REFUSED_FIELDS:
        if config.get(name):
            return f"{name} is set"
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
@dataclass(eq=False)
class GatherPlan:
    """Which units of one forward run which adapter, laid out for batched matmuls. Built
    once per forward (or found in the plan cache), read by every pooled module.

    A unit is a row of a [B, S] batch, or one token of a packed row [1, T] (`packed`). The
    units with an adapter are selected — the range `span` [lo, hi), or `index` [n] — and laid
    out as G groups of m units, one adapter per group: `take` [G*m] picks them from the
    selection (padding repeats a unit) and `slots` [n] finds each one back in that layout.
    When both are None the selection already is the layout (the engine sorts its rows and
    packed prompts by adapter, so equal counts need nothing): the delta is then one in-place
    `baddbmm_` into a view of the output, with nothing gathered or scattered per module.

        xa   = bmm(x_sel[take].view(G, m*S, d_in), A^T)     [G, m*S, r]
        out += bmm(xa, Bs)[slots]                            [n, S, d_out]

    pages: [G, r] each group's pages, 0-padded to the plan's largest rank (page 0 is zeros);
    page_span: one group whose pages are one contiguous run, read as views of the pools;
    targets: the pooled modules some adapter of the plan targets (the others are skipped);
    weights: each pool's gathered (A^T [G, d_in, r], Bs [G, r, d_out]), kept for the plan's
    lifetime so a cached decode plan gathers once per batch membership, not once per step
    (None: gathered in every forward, because the plan cache's byte bound is spent);
    signature: the groups' adapters and the rank width — plans with equal signatures have
    equal pages, so a packed prefill and the decode batch its prompts join share one
    gathered copy (`GatheredLora.segment_plan`).
    units None: any batch, every row on the one adapter."""

    units: int | None
    packed: bool
    span: tuple[int, int] | None
    index: torch.Tensor | None
    take: torch.Tensor | None
    slots: torch.Tensor | None
    pages: torch.Tensor
    page_span: tuple[int, int] | None
    targets: frozenset[str]
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = field(default_factory=dict)
    signature: tuple = ()

    @property
    def groups(self) -> int:
        return self.pages.shape[0]

    def check(self, x: torch.Tensor) -> None:
        """Refuse an input the plan was not made for (its rows or packed tokens)."""
        if self.packed:
            if x.dim() != 3 or x.shape[0] != 1 or x.shape[1] != self.units:
                raise ValueError(f"a packed plan of {self.units} tokens, input {tuple(x.shape)}")
        elif self.units is not None and x.shape[0] != self.units:
            raise ValueError(f"adapters for {self.units} rows, batch has {x.shape[0]}")

    def as_units(self, t: torch.Tensor) -> torch.Tensor:
        """`t` [B, S, d] as [U, S, d]: itself, or a packed [1, T, d] as [T, 1, d] (a view)."""
        return t.view(self.units, 1, t.shape[-1]) if self.packed else t

    def narrow(self, t: torch.Tensor) -> torch.Tensor:
        """The units of `span` in `t` (rows [lo, hi), or packed tokens [lo, hi)), a view."""
        lo, hi = self.span
        return t[:, lo:hi] if self.packed else t[lo:hi]


# Plans kept between forwards (decode batches repeat theirs until their membership changes).
PLAN_CACHE_ENTRIES = 8
DEFAULT_MAX_PLAN_CACHE_BYTES = 256 << 20  # gathered weight copies the plan cache may keep
# On CPU a module's delta of at most this many multiply-adds runs on the calling thread (torch's
# intra-op thread count set to 1 around it, put back after). WHY: a decode step's delta is tiny
# (64 rows x rank 8 x (d_in + d_out) ~ 0.5M at hidden 256), yet torch runs bmm / baddbmm_ as
# OpenMP parallel regions; forking and joining one costs more than the work on an idle machine,
# and on a shared one a region waits for its second thread to be scheduled at all (p90 of one
# such bmm on 2 loaded cores: 20 ms against a 4 us median; benchmarks/results/inference.md). The
# base projections keep every thread. A packed prefill's delta is larger and keeps them too.
# Scope: OpenMP's thread count is the calling thread's, but MKL's is the process's; that is
# safe because every forward of an engine runs on its one step-loop thread (the adapter
# loader thread only reads files; the copy into pages happens on the step-loop thread).
SERIAL_DELTA_MACS = 1 << 20


# --------------------------------------------------------------------------- the pools
class _ModulePool:
    """The paged buffers of one target linear layer, and the hook that adds the delta."""

    def __init__(self, store: GatheredLora, path: str, linear: nn.Linear, pages: int) -> None:
        self.store = store
        self.path = path
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

    def weights(self, plan: GatherPlan) -> tuple[torch.Tensor, torch.Tensor]:
        """The plan's groups' pages of this pool: A^T [G, d_in, r] (a transposed view) and
        Bs [G, r, d_out] — views of the pool for one contiguous group, else gathered once per
        plan (per forward when the plan keeps no weights)."""
        cached = None if plan.weights is None else plan.weights.get(self.path)
        if cached is not None:
            return cached
        if plan.page_span is not None:  # views: nothing copied
            lo, hi = plan.page_span
            a, b = self.a[lo:hi].unsqueeze(0), self.b[lo:hi].unsqueeze(0)
        else:
            g, r = plan.pages.shape
            flat = plan.pages.view(-1)
            a = self.a.index_select(0, flat).view(g, r, -1)
            b = self.b.index_select(0, flat).view(g, r, -1)
        pair = (a.transpose(1, 2), b)
        if plan.weights is not None:
            plan.weights[self.path] = pair
        return pair

    def _add_delta(self, _module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        plan = self.store.plan
        if plan is None or self.path not in plan.targets:
            return output
        x = args[0]
        plan.check(x)
        threads = self.store.serial_threads
        # work of this delta (multiply-adds): its tokens x the plan's rank x (d_in + d_out)
        if (
            threads
            and x.numel() // x.shape[-1] * plan.pages.shape[1] * (x.shape[-1] + output.shape[-1])
            <= SERIAL_DELTA_MACS
        ):
            torch.set_num_threads(1)  # see SERIAL_DELTA_MACS
            try:
                self._delta(plan, x, output)
            finally:
                torch.set_num_threads(threads)
        else:
            self._delta(plan, x, output)
        return output

    def _delta(self, plan: GatherPlan, x: torch.Tensor, output: torch.Tensor) -> None:
        """Add the plan's LoRA delta of input `x` [B, S, d_in] into `output` [B, S, d_out]."""
        cached = plan.weights
        pair = None if cached is None else cached.get(self.path)
        a_t, b = self.weights(plan) if pair is None else pair  # [G, d_in, r], [G, r, d_out]
        g, d_in, d_out = plan.groups, x.shape[-1], output.shape[-1]
        if plan.take is None and plan.index is None:  # the output rows are the layout
            xs, out = x, output
            if plan.span is not None:  # the base rows before and after are left alone
                xs, out = plan.narrow(x), plan.narrow(output)
            xa = torch.bmm(xs.reshape(g, -1, d_in), a_t)  # [G, m*S, r]
            out.view(g, -1, d_out).baddbmm_(xa, b)
            return
        xu, ou = plan.as_units(x), plan.as_units(output)  # [U, S, d]
        if plan.index is not None:
            xs = xu.index_select(0, plan.index)  # [n, S, d_in]
        else:
            xs = xu if plan.span is None else xu[plan.span[0] : plan.span[1]]
        if plan.take is not None:
            xs = xs.index_select(0, plan.take)  # [G*m, S, d_in]
        xa = torch.bmm(xs.reshape(g, -1, d_in), a_t)  # [G, m*S, r]
        delta = torch.bmm(xa, b).view(-1, *xs.shape[1:-1], d_out)  # [G*m, S, d_out]
        if plan.slots is not None:
            delta = delta.index_select(0, plan.slots)  # [n, S, d_out]
        if plan.index is not None:
            ou.index_add_(0, plan.index, delta)
        else:
            (ou if plan.span is None else ou[plan.span[0] : plan.span[1]]).add_(delta)


class GatheredLora:
    """The paged adapter store of one base instance (scheduler thread only).

    `max_bytes` bounds the buffers (all pooled modules, pages of every rank); `install`
    returns False when the free pages cannot hold an adapter and the bound forbids growing —
    the caller evicts and retries. `max_plan_cache_bytes` bounds the gathered weight copies kept
    by cached plans (a decode batch's adapters, gathered once per membership)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        max_bytes: int,
        max_plan_cache_bytes: int = DEFAULT_MAX_PLAN_CACHE_BYTES,
    ) -> None:
        self.model = model
        self.max_bytes = max_bytes
        self.max_plan_cache_bytes = max_plan_cache_bytes
        self.plan: GatherPlan | None = None
        # torch's intra-op threads to restore after a small delta run on one (0: leave them,
        # on CUDA or with one thread; set per forward by `using`, see SERIAL_DELTA_MACS).
        self.serial_threads = 0
        self._pools: dict[str, _ModulePool] = {}
        self._capacity = 1  # pages per pool, page 0 (zeros) included
        self._free: list[int] = []
        self._pages: dict[str, torch.Tensor] = {}  # adapter -> its page ids [r]
        self._page_ids: dict[str, list[int]] = {}  # the same, as ints (plans are built from)
        self._spans: dict[str, tuple[int, int] | None] = {}  # contiguous pages, if they are
        self._targets: dict[str, frozenset[str]] = {}  # adapter -> the modules it targets
        self._plans: OrderedDict[tuple, GatherPlan] = OrderedDict()
        self._plan_bytes: dict[tuple, int] = {}  # cached plans' weight bytes
        self._by_signature: dict[tuple, GatherPlan] = {}  # cached plans by their pages
        # The last packed prefill's gathered weights, for the decode plan of its prompts.
        self._segment_weights: tuple[tuple, dict] | None = None
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

    @property
    def plan_cache_bytes(self) -> int:
        """Bytes the plan cache may hold in gathered weight copies (reserved at plan time)."""
        return sum(self._plan_bytes.values())

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
        self._clear_plans()  # a grown pool is a new tensor: no plan may keep views of the old
        taken = self._take(weights.rank)
        pages = torch.tensor(taken, device=self._device)
        for path, pool in self._pools.items():
            pool.write(pages, weights.modules.get(path))
        self._pages[name] = pages
        self._page_ids[name] = taken
        contiguous = taken == list(range(taken[0], taken[0] + len(taken)))
        self._spans[name] = (taken[0], taken[0] + len(taken)) if contiguous else None
        self._targets[name] = frozenset(weights.modules)
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
        self._clear_plans()  # cached plans may name its pages
        self._pages.pop(name)
        self._free.extend(self._page_ids.pop(name))
        self._spans.pop(name, None)
        self._targets.pop(name, None)
        self._free.sort()

    def close(self) -> None:
        """Remove the hooks and buffers: the model is left as it was given."""
        for pool in self._pools.values():
            pool.hook.remove()
        self._clear_plans()
        self._pools.clear()
        self._pages.clear()
        self._page_ids.clear()
        self._spans.clear()
        self._targets.clear()
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
            self._pools[path] = _ModulePool(self, path, self._linear(path), self._capacity)
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
    def row_plan(self, adapters: Sequence[str | None]) -> GatherPlan | None:
        """The plan for a batch whose row i runs adapters[i] (None: the base); None when no
        row has an adapter (the plain base forward). One name and no base row: that adapter
        for every row, whatever the batch size. Cached: a decode batch asks for the same
        plan every step until its membership changes."""
        key = tuple(adapters)
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            return plan
        if all(a is None for a in adapters):
            return None
        names = {a for a in adapters if a is not None}
        if len(names) == 1 and None not in key:
            (name,) = names
            plan = self._plan([(name, 1)], units=None, packed=False)
        else:
            plan = self._plan([(a, 1) for a in adapters], units=len(adapters), packed=False)
        if self._segment_weights is not None and self._segment_weights[0] == plan.signature:
            plan.weights = self._segment_weights[1]  # its prompts' prefill gathered them
            self._segment_weights = None
        self._cache_plan(key, plan)
        return plan

    def segment_plan(
        self, adapters: Sequence[str | None], lengths: Sequence[int]
    ) -> GatherPlan | None:
        """The plan of a packed row: prompt k's `lengths[k]` tokens run adapters[k]. Not
        cached (a prefill's mix of prompt lengths does not come back), but its gathered
        weights are shared by signature: a cached decode plan's are reused, and the decode
        plan made next adopts these. WHY: the engine sorts both the packed prompts and the
        decode rows by adapter, so the prompts of one admission and the batch they join have
        the same groups; without sharing each new batch gathered its adapters' pages twice."""
        runs = list(zip(adapters, lengths, strict=True))
        if all(a is None for a, _ in runs):
            return None
        plan = self._plan(runs, units=sum(lengths), packed=True)
        cached = self._by_signature.get(plan.signature)
        if cached is not None and cached.weights is not None:
            plan.weights = cached.weights
        else:
            plan.weights = {}
            # kept for the decode plan only within the plan cache's byte bound
            fits = self._weights_bytes(plan) <= self.max_plan_cache_bytes
            self._segment_weights = (plan.signature, plan.weights) if fits else None
        return plan

    def _plan(
        self, runs: Sequence[tuple[str | None, int]], *, units: int | None, packed: bool
    ) -> GatherPlan:
        """Lay out `runs` (adapter, units) in unit order: the selection, then the groups."""
        members: dict[str, list[int]] = {}  # adapter -> its positions in the selection
        selected: list[int] = []  # the units with an adapter, in order
        merged: list[list] = []  # [adapter, units] runs of the selection, neighbours merged
        start = 0
        for adapter, count in runs:
            if adapter is not None:
                if adapter not in self._pages:
                    raise KeyError(adapter)  # not resident here
                at = len(selected)
                members.setdefault(adapter, []).extend(range(at, at + count))
                selected.extend(range(start, start + count))
                if merged and merged[-1][0] == adapter:
                    merged[-1][1] += count
                else:
                    merged.append([adapter, count])
            start += count
        n = len(selected)
        device = self._device
        span = index = None
        if units is not None:
            if n == units:
                pass  # every unit: no narrowing
            elif selected[-1] - selected[0] + 1 == n:
                span = (selected[0], selected[-1] + 1)
            else:
                index = torch.tensor(selected, device=device)
        targets = frozenset().union(*(self._targets[a] for a in members))
        if len(members) == 1:  # one adapter: one group, its own pages (a view if contiguous)
            (name,) = members
            return GatherPlan(
                units, packed, span, index, None, None, self._pages[name][None],
                self._spans[name], targets, signature=((name,), len(self._page_ids[name])),
            )  # fmt: skip
        step = math.gcd(*(count for _, count in merged))
        if n // step <= 2 * len(members):  # runs cut in equal groups: the selection is the layout
            groups = [name for name, count in merged for _ in range(count // step)]
            take = slots = None
        else:
            groups, take, slots = self._layout_groups(members, n)
        width = max(len(self._page_ids[a]) for a in members)
        pages = torch.zeros(len(groups), width, dtype=torch.long, device=device)
        for k, name in enumerate(groups):
            ids = self._pages[name]
            pages[k, : ids.numel()] = ids
        as_tensor = lambda v: None if v is None else torch.tensor(v, device=device)  # noqa: E731
        return GatherPlan(
            units, packed, span, index, as_tensor(take), as_tensor(slots), pages, None, targets,
            signature=(tuple(groups), width),
        )  # fmt: skip

    @staticmethod
    def _layout_groups(
        members: dict[str, list[int]], n: int
    ) -> tuple[list[str], list[int], list[int]]:
        """Group the selection by adapter in chunks of m = ceil(n / D) units, padding each
        adapter's last chunk with its first unit: G <= 2D groups, G*m <= 2n slots."""
        m = -(-n // len(members))
        groups, take, slots = [], [], [0] * n
        for name, positions in members.items():
            for lo in range(0, len(positions), m):
                chunk = positions[lo : lo + m]
                for j, position in enumerate(chunk):
                    slots[position] = len(take) + j
                take += chunk + [chunk[0]] * (m - len(chunk))
                groups.append(name)
        return groups, take, slots

    def _cache_plan(self, key: tuple, plan: GatherPlan) -> None:
        """Keep `plan` (LRU of PLAN_CACHE_ENTRIES); its gathered weights only while the
        copies of all cached plans stay within `max_plan_cache_bytes`."""
        need = self._weights_bytes(plan)
        while self._plans and (
            len(self._plans) >= PLAN_CACHE_ENTRIES
            or self.plan_cache_bytes + need > self.max_plan_cache_bytes
        ):
            old, dropped = self._plans.popitem(last=False)
            self._plan_bytes.pop(old, None)
            if self._by_signature.get(dropped.signature) is dropped:
                del self._by_signature[dropped.signature]
        if need > self.max_plan_cache_bytes:
            plan.weights = None  # too big to keep: gathered in every forward
            need = 0
        self._plans[key] = plan
        self._plan_bytes[key] = need
        if plan.weights is not None:
            self._by_signature[plan.signature] = plan

    def _weights_bytes(self, plan: GatherPlan) -> int:
        """Bytes of the plan's gathered weight copies (0: views of the pools)."""
        if plan.page_span is not None:
            return 0
        return plan.pages.numel() * sum(self._pools[p].bytes_per_page for p in plan.targets)

    def _clear_plans(self) -> None:
        self._plans.clear()
        self._plan_bytes.clear()
        self._by_signature.clear()
        self._segment_weights = None

    @contextmanager
    def using(self, plan: GatherPlan | None) -> Iterator[None]:
        """Apply `plan` to the forwards run inside (cleared even when the forward raises)."""
        self.plan = plan
        threads = torch.get_num_threads() if plan is not None else 1
        self.serial_threads = threads if threads > 1 and self._device.type == "cpu" else 0
        try:
            yield
        finally:
            self.plan = None
            self.serial_threads = 0


def _page_bytes(linear: nn.Module) -> int:
    weight = linear.weight
    return (linear.in_features + linear.out_features) * weight.element_size()
