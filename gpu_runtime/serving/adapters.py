"""Many LoRA adapters hot on shared bases, grouped by the RoPE scaling they were trained with.

WHY groups: RoPE scaling is not in the adapter weights — it is in the base's rotary
embedding. A LongTune LoRA artifact saves the *extended* config.json it was trained under
(rope_parameters, max_position_embeddings). Serving it on a base with other scaling silently
degrades long-context quality, so every distinct `rope_parameters` gets its own
`ModelInstance`: the base weights loaded again from the same files with that config. Two
instances share nothing but the weights file on disk (memory is paid per group); adapters
inside one group share their instance's weights, loaded side by side with peft's
multi-adapter API (`load_adapter` / `delete_adapter`). An adapter directory without a
config.json is served in the engine's default group.

WHY one forward for many adapters: a decode step of N requests on N different adapters would
otherwise run the base N times for one token each, and peft's own mixed batch
(`adapter_names`) loops over the batch's adapters with row masks in every layer — its cost
grows with the number of distinct adapters. Plain-LoRA adapters are therefore not loaded into
peft at all: `gathered.GatheredLora` keeps their A/B matrices in paged buffers per target
module (S-LoRA's unified paging) and adds the whole batch's LoRA delta to each base projection
with two batched matmuls over the rows' gathered weights (Punica's BGMV for decode rows, one
matmul pair per prompt segment, SGMV-style, for packed prefill) — one forward for the whole
mixed batch whatever the number of adapters. What cannot be gathered (`gathered.gather_refusal`:
DoRA and other variants, modules_to_save / trainable tokens such as LongLoRA's trained
embeddings and norms, LoRA on embeddings, biases) is loaded into peft as before and served in
forwards of its own via `set_adapter`; while gathered rows run, those peft layers are disabled.

`AdapterPool` keeps at most `max_loaded` adapters resident (across all groups), and each
group's gathered buffers within `max_adapter_bytes`, evicting the least recently used adapters
that no running request holds. While requests are running, a cold adapter's files are read on
a loader thread (S-LoRA: swap in without stopping the batch) and copied into free pages
between two scheduler steps; pages of resident adapters never move. A group instance other
than the default is dropped once its last adapter is evicted.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache, PretrainedConfig
from transformers.cache_utils import DynamicLayer

from gpu_runtime.attention import FLASH_ATTENTION_2, VARLEN_SDPA, select_attention_implementation
from gpu_runtime.contract import LENGTH_DEPENDENT_ROPE_METHODS
from gpu_runtime.rope import ContextSpec, context_of
from gpu_runtime.serving.gathered import (
    DEFAULT_MAX_PLAN_CACHE_BYTES,
    GatheredLora,
    LoraWeights,
    gather_refusal,
    read_lora_weights,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_ADAPTER_BYTES = 1 << 30  # gathered buffers per RoPE group (EngineConfig overrides)

# Attention implementations that keep the prompts of a packed row apart: both cut the row into
# documents where the position id restarts at 0 (LongTune's varlen SDPA and transformers'
# flash_attention_2 via `prepare_fa_kwargs_from_position_ids`). "sdpa"/"eager" would run one
# causal mask over the whole row, letting a prompt attend the prompts packed before it.
PACKED_PREFILL_ATTENTION = frozenset({VARLEN_SDPA, FLASH_ATTENTION_2})
# RoPE types whose frequencies follow the largest position id of the forward: LongTune's
# length-dependent methods (HF dynamic NTK: method name = HF rope_type) and LongRoPE's
# long/short factor switch. Packed, every prompt would get the longest one's.
_FORWARD_DEPENDENT_ROPE = LENGTH_DEPENDENT_ROPE_METHODS | {"longrope"}


def rope_signature(config: PretrainedConfig) -> str:
    """Canonical string of a config's RoPE scaling; equal strings ⇒ identical rotary embedding."""
    params = getattr(config, "rope_parameters", None) or {}
    normalized = {
        key: (float(value) if isinstance(value, int | float) and key != "rope_type" else value)
        for key, value in dict(params).items()
        if value is not None
    }
    normalized.setdefault("rope_type", "default")
    if normalized["rope_type"] == "dynamic":  # HF dynamic NTK also depends on this length
        normalized["max_position_embeddings"] = int(config.max_position_embeddings)
    return json.dumps(normalized, sort_keys=True)


def resolve_adapter_dir(location: str) -> Path:
    """Local directory of an adapter at a local path or an s3:// prefix (mirrored to a cache)."""
    if location.startswith("s3://"):
        from gpu_runtime.registry import download_s3_prefix

        path = download_s3_prefix(location)
    else:
        path = Path(location.removeprefix("file://")).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{location!r} is not a peft adapter (no adapter_config.json)")
    return path


def adapter_config(adapter_dir: Path) -> PretrainedConfig | None:
    """The config an adapter was trained under, or None when the artifact carries none."""
    if not (adapter_dir / "config.json").is_file():
        return None
    return AutoConfig.from_pretrained(adapter_dir, local_files_only=True)


def saved_context(adapter_dir: Path) -> ContextSpec | None:
    """The spec in an adapter artifact's saved config.json (None: it carries no config and is
    served in the default group). Plain JSON: no weights, no transformers config class."""
    path = adapter_dir / "config.json"
    if not path.is_file():
        return None
    return ContextSpec.of_model_config(json.loads(path.read_text()))


@dataclass(frozen=True)
class InstanceSpec:
    """How to load a base: weights directory + the config (with RoPE scaling) to load it with."""

    model_dir: Path
    config: PretrainedConfig
    dtype: torch.dtype | None
    attn_implementation: str
    device: torch.device


class ModelInstance:
    """One loaded copy of the base weights with one RoPE scaling, plus its adapters: plain
    LoRA ones in the gathered buffers, the others in peft."""

    def __init__(
        self,
        spec: InstanceSpec,
        model: torch.nn.Module | None = None,
        *,
        max_adapter_bytes: int = DEFAULT_MAX_ADAPTER_BYTES,
        max_plan_cache_bytes: int = DEFAULT_MAX_PLAN_CACHE_BYTES,
    ) -> None:
        self.spec = spec
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(
                spec.model_dir,
                config=spec.config,
                dtype=spec.dtype if spec.dtype is not None else "auto",
                attn_implementation=select_attention_implementation(spec.attn_implementation),
                local_files_only=True,
            )
        self.base = model.to(spec.device).eval()
        self.peft: Any | None = None  # PeftModel wrapping `base` once a fallback adapter loads
        self.gathered = GatheredLora(
            self.base, max_bytes=max_adapter_bytes, max_plan_cache_bytes=max_plan_cache_bytes
        )
        self.signature = rope_signature(self.base.config)
        # Several prompts' first chunks may be prefilled as one packed row (engine._prefill).
        self.can_pack_prefill = supports_packed_prefill(self.base)

    @property
    def context(self) -> ContextSpec:
        """The context this instance serves: the spec recorded in the config it was loaded
        with (a LongTune artifact's), else the base's own length."""
        return context_of(self.base.config)

    @property
    def max_context(self) -> int:
        return self.context.target_length

    @property
    def adapters(self) -> list[str]:
        peft_names = [] if self.peft is None else list(self.peft.peft_config)
        return self.gathered.adapters + peft_names

    def load_adapter(self, name: str, adapter_dir: Path) -> None:
        """Load `name` now: gathered when it can be, else into peft."""
        weights = None if gather_refusal(adapter_dir) else read_lora_weights(adapter_dir)
        if weights is None or not self.install_gathered(name, weights):
            self.load_peft_adapter(name, adapter_dir)

    def install_gathered(self, name: str, weights: LoraWeights) -> bool:
        """Copy a gatherable adapter into free pages; False when the byte bound leaves no room
        (evict and retry). Raises ValueError when a target is not a linear layer here."""
        refusal = self.gathered.targets(weights)
        if refusal is not None:
            raise ValueError(refusal)
        installed = self.gathered.install(name, weights)
        if installed:
            logger.info("gathered adapter %s into group %s", name, self.signature)
        return installed

    def load_peft_adapter(self, name: str, adapter_dir: Path) -> None:
        """An adapter that cannot be gathered: peft, served in forwards of its own."""
        from peft import PeftModel

        if self.peft is None:
            self.peft = PeftModel.from_pretrained(
                self.base, adapter_dir, adapter_name=name, is_trainable=False
            ).eval()
        else:
            self.peft.load_adapter(adapter_dir, adapter_name=name, is_trainable=False)
        logger.info("loaded adapter %s into peft, group %s (own forwards)", name, self.signature)

    def unload_adapter(self, name: str) -> None:
        if name in self.gathered:
            self.gathered.evict(name)
            return
        assert self.peft is not None
        if len(self.peft.peft_config) == 1:
            # Last one: remove the LoRA layers entirely so other requests pay no peft overhead.
            self.base = self.peft.unload().eval()
            self.peft = None
        else:
            self.peft.delete_adapter(name)

    def close(self) -> None:
        """Drop every adapter (peft's LoRA layers and the gathered hooks and buffers)."""
        for name in self.adapters:
            self.unload_adapter(name)
        self.gathered.close()

    def can_mix(self, adapter: str | None) -> bool:
        """Whether rows of `adapter` (None = the base) may share a forward with other adapters'
        rows: the base and gathered adapters; False for peft ones and ones not loaded here."""
        return adapter is None or adapter in self.gathered

    def forward_rows(self, adapters: Sequence[str | None], **inputs: Any) -> Any:
        """One forward of the batch in `inputs` where row i runs with adapters[i] (None = the
        plain base): the model output, as `model(**inputs)` returns it.

        Base and gathered adapters, in any mix, are one base forward plus the gathered delta
        (`GatheredLora.row_plan`); an adapter that cannot mix runs a batch of its own."""
        distinct = set(adapters)
        if all(self.can_mix(a) for a in distinct):
            plan = self.gathered.row_plan(adapters)
            with self.activate(None) as model, self.gathered.using(plan):
                return model(**inputs)
        if len(distinct) == 1:
            with self.activate(next(iter(distinct))) as model:
                return model(**inputs)
        cannot = sorted(str(a) for a in distinct if not self.can_mix(a))
        raise ValueError(f"adapters {cannot} cannot share a forward with other adapters")

    def forward_packed(
        self, adapters: Sequence[str | None], lengths: Sequence[int], **inputs: Any
    ) -> Any:
        """One forward of a packed row `[1, sum(lengths)]`: prompt k's span runs adapters[k]
        (segment-wise gathered delta); an unmixable adapter packs only with itself."""
        distinct = set(adapters)
        if all(self.can_mix(a) for a in distinct):
            plan = self.gathered.segment_plan(adapters, lengths)
            with self.activate(None) as model, self.gathered.using(plan):
                return model(**inputs)
        if len(distinct) == 1:
            with self.activate(next(iter(distinct))) as model:
                return model(**inputs)
        raise ValueError("an adapter that cannot be gathered packs only with itself")

    @contextmanager
    def activate(self, adapter: str | None) -> Iterator[torch.nn.Module]:
        """The module to call for requests of `adapter` (None = the plain base, to which the
        gathered delta is added when a plan is set); `adapter` must be a peft one otherwise."""
        if self.peft is None:
            if adapter is not None:
                raise KeyError(f"adapter {adapter!r} is not a peft adapter here")
            yield self.base
        elif adapter is None:
            with self.peft.disable_adapter():  # also bypasses modules_to_save wrappers
                yield self.peft
        else:
            if self.peft.active_adapter != adapter:
                self.peft.set_adapter(adapter)
            yield self.peft


def supports_packed_prefill(model: torch.nn.Module) -> bool:
    """Whether the first chunks of several prompts may share one prefill forward as one packed
    row (`input_ids [1, n_1 + n_2 + ...]`, position ids restarting at 0 per prompt) and give
    each prompt exactly what prefilling it alone gives.

    True only when (1) the attention implementation is one in `PACKED_PREFILL_ATTENTION` —
    only LongTune's `longtune_varlen_sdpa` and `flash_attention_2` treat a position 0 as a
    document start (with a cache transformers does not build its packed mask, and "sdpa" or
    "eager" would let prompts attend each other); (2) the rotary embedding does not depend on
    the forward's largest position; (3) every cache layer is a plain full-attention
    `DynamicLayer`, whose packed keys can be cut into per-prompt caches by token span (a
    sliding-window layer would have dropped keys of earlier prompts)."""
    config = model.config
    if getattr(config, "_attn_implementation", None) not in PACKED_PREFILL_ATTENTION:
        return False
    params = dict(getattr(config, "rope_parameters", None) or {})
    rope_types = {params.get("rope_type")} | {
        p.get("rope_type") for p in params.values() if isinstance(p, dict)
    }
    if rope_types & _FORWARD_DEPENDENT_ROPE:
        return False
    layers = DynamicCache(config=config).layers
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


@dataclass
class _Resident:
    signature: str
    pins: int = 0


@dataclass(frozen=True)
class PreparedAdapter:
    """What reading an adapter's files yields (off the scheduler thread while it is busy)."""

    adapter_dir: Path
    config: PretrainedConfig | None  # the config it was trained under (its RoPE group)
    weights: LoraWeights | None  # None: it cannot be gathered (peft loads it on install)
    started: float  # time.perf_counter() when the read began (swap-in latency)


def prepare_adapter(location: str) -> PreparedAdapter:
    """Fetch (s3 mirror), classify and read an adapter: everything but touching the model."""
    started = time.perf_counter()
    adapter_dir = resolve_adapter_dir(location)
    refusal = gather_refusal(adapter_dir)
    if refusal is not None:
        logger.info("adapter at %s cannot be gathered (%s): peft serves it", location, refusal)
    weights = None if refusal is not None else read_lora_weights(adapter_dir)
    return PreparedAdapter(adapter_dir, adapter_config(adapter_dir), weights, started)


@dataclass(frozen=True)
class SwapIn:
    """One adapter made resident: how long from the first request to usable pages."""

    name: str
    seconds: float
    gathered: bool
    background: bool  # read on the loader thread while other requests kept running


class AdapterPool:
    """LRU of resident adapters over the group instances (used from the scheduler thread only).

    `acquire(..., background=True)` never blocks on files: it starts the read on a loader
    thread and answers None (not yet) until the adapter is installed."""

    def __init__(
        self,
        default: ModelInstance,
        *,
        max_loaded: int,
        max_adapter_bytes: int = DEFAULT_MAX_ADAPTER_BYTES,
        max_plan_cache_bytes: int = DEFAULT_MAX_PLAN_CACHE_BYTES,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        if max_loaded < 1:
            raise ValueError("max_loaded must be >= 1")
        self.default = default
        self.max_loaded = max_loaded
        self.max_adapter_bytes = max_adapter_bytes
        self.max_plan_cache_bytes = max_plan_cache_bytes
        self.instances: dict[str, ModelInstance] = {default.signature: default}
        self._resident: OrderedDict[str, _Resident] = OrderedDict()
        self._loads: dict[str, Future[PreparedAdapter]] = {}
        self._loader: ThreadPoolExecutor | None = None
        self._on_ready = on_ready
        self.evictions: list[str] = []  # history, for metrics and tests
        self.swap_ins: list[SwapIn] = []

    @property
    def resident(self) -> list[str]:
        """Loaded adapter names, least recently used first."""
        return list(self._resident)

    @property
    def loading(self) -> bool:
        """Whether an adapter's files are being read in the background."""
        return bool(self._loads)

    def instance_for(self, adapter: str | None) -> ModelInstance:
        if adapter is None:
            return self.default
        return self.instances[self._resident[adapter].signature]

    def acquire(
        self, name: str, location: str, *, background: bool = False
    ) -> ModelInstance | None:
        """Pin `name` (loading it, evicting LRU unpinned adapters if needed) and return its
        instance; None when it is still being read (`background`) or when the pool is full
        of adapters that running requests still use."""
        if name in self._resident:
            self._resident.move_to_end(name)
            self._resident[name].pins += 1
            return self.instances[self._resident[name].signature]
        load = self._loads.get(name)
        if load is None and background:
            self._loads[name] = load = self._executor().submit(prepare_adapter, location)
            if self._on_ready is not None:
                load.add_done_callback(lambda _: self._on_ready())
        if load is not None and not load.done():
            return None
        if load is not None:
            try:
                prepared = load.result()
            finally:
                del self._loads[name]
        else:
            prepared = prepare_adapter(location)
        instance = self._install(name, prepared)
        if instance is None:  # no room now: keep what was read for the next try
            done: Future[PreparedAdapter] = Future()
            done.set_result(prepared)
            self._loads[name] = done
            return None
        self._resident[name] = _Resident(signature=instance.signature, pins=1)
        self.swap_ins.append(
            SwapIn(
                name,
                time.perf_counter() - prepared.started,
                gathered=prepared.weights is not None and name in instance.gathered,
                background=load is not None,
            )
        )
        return instance

    def release(self, name: str) -> None:
        self._resident[name].pins -= 1

    def unload_all(self) -> None:
        """Drop every adapter, hook and group instance: the default base is left as it was
        given (no LoRA layers, no hooks)."""
        if self._loader is not None:
            self._loader.shutdown(wait=True, cancel_futures=True)
            self._loader = None
        self._loads.clear()
        for instance in self.instances.values():
            instance.close()
        self._resident.clear()
        self.instances = {self.default.signature: self.default}

    def _executor(self) -> ThreadPoolExecutor:
        if self._loader is None:
            self._loader = ThreadPoolExecutor(1, thread_name_prefix="longtune-adapter-loader")
        return self._loader

    def _install(self, name: str, prepared: PreparedAdapter) -> ModelInstance | None:
        """Make a prepared adapter resident within both bounds; None when pinned adapters
        leave no room (the caller retries next step)."""
        if len(self._resident) >= self.max_loaded and not self._evict_one():
            return None
        instance = self._instance_for_config(prepared.config)
        weights = prepared.weights
        if weights is not None and instance.gathered.targets(weights) is not None:
            logger.info("adapter %s: %s; peft serves it", name, instance.gathered.targets(weights))
            weights = None
        if weights is None:
            instance.load_peft_adapter(name, prepared.adapter_dir)
            return instance
        if not instance.gathered.could_fit(weights):
            raise ValueError(
                f"adapter {name!r} does not fit in max_adapter_bytes={self.max_adapter_bytes}"
            )
        while not instance.install_gathered(name, weights):
            if not self._evict_one(gathered_in=instance):
                self._drop_if_empty(instance)
                return None
        return instance

    def _evict_one(self, gathered_in: ModelInstance | None = None) -> bool:
        """Evict the least recently used unpinned adapter (one gathered in `gathered_in`
        when given: only those free its pages)."""
        victim = next(
            (
                n
                for n, r in self._resident.items()
                if r.pins == 0 and (gathered_in is None or n in gathered_in.gathered)
            ),
            None,
        )
        if victim is None:
            return False
        signature = self._resident.pop(victim).signature
        instance = self.instances[signature]
        instance.unload_adapter(victim)
        self.evictions.append(victim)
        if instance is not gathered_in:
            self._drop_if_empty(instance)
        return True

    def _drop_if_empty(self, instance: ModelInstance) -> None:
        if instance is not self.default and not instance.adapters:
            instance.close()
            del self.instances[instance.signature]  # frees that group's copy of the base

    def _instance_for_config(self, config: PretrainedConfig | None) -> ModelInstance:
        if config is None:
            return self.default
        signature = rope_signature(config)
        if signature not in self.instances:
            spec = self.default.spec
            logger.info("loading a base instance for RoPE group %s", signature)
            self.instances[signature] = ModelInstance(
                InstanceSpec(
                    spec.model_dir, config, spec.dtype, spec.attn_implementation, spec.device
                ),
                max_adapter_bytes=self.max_adapter_bytes,
                max_plan_cache_bytes=self.max_plan_cache_bytes,
            )
        return self.instances[signature]
