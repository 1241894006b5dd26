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

WHY one forward for many adapters (`ModelInstance.forward_rows`): a decode step of N
requests on N different adapters would otherwise run the base N times for one token each.
peft's mixed-batch inference (`adapter_names=[...]`, one name per row, "__base__" for the
plain base) runs the base layers once over the whole batch and adds each LoRA delta to its
own rows only. peft 0.21 limits it to plain LoRA on Linear/Embedding/Conv layers, in eval
mode, with nothing merged; it refuses DoRA (and leaves other LoRA variants, multi-head
attention and `target_parameters` layers unsupported), and it breaks as soon as any resident
adapter carries `modules_to_save` / trainable tokens (the wrapper looks every row's adapter
up in its own dict, and norms cannot be mixed at all). So `can_mix` tells per adapter whether
it may share a forward; adapters that cannot (e.g. LongLoRA artifacts that also trained the
embeddings and norms) are served in forwards of their own via `set_adapter`, and while others
are mixed their wrappers are bypassed (no mixed row uses them).

`AdapterPool` keeps at most `max_loaded` adapters resident (across all groups), evicting the
least recently used one that no running request holds. A group instance other than the
default is dropped once its last adapter is evicted.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache, PretrainedConfig
from transformers.cache_utils import DynamicLayer

from gpu_runtime.attention import FLASH_ATTENTION_2, VARLEN_SDPA, select_attention_implementation
from gpu_runtime.rope import ContextSpec, context_of

logger = logging.getLogger(__name__)

BASE_ROW = "__base__"  # peft's adapter name for a mixed-batch row served by the plain base

# Attention implementations that keep the prompts of a packed row apart: both cut the row into
# documents where the position id restarts at 0 (LongTune's varlen SDPA and transformers'
# flash_attention_2 via `prepare_fa_kwargs_from_position_ids`). "sdpa"/"eager" would run one
# causal mask over the whole row, letting a prompt attend the prompts packed before it.
PACKED_PREFILL_ATTENTION = frozenset({VARLEN_SDPA, FLASH_ATTENTION_2})
# RoPE types whose frequencies follow the largest position id of the forward (HF dynamic NTK,
# LongRoPE's long/short factor switch): packed, every prompt would get the longest one's.
_FORWARD_DEPENDENT_ROPE = frozenset({"dynamic", "longrope"})


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
    """One loaded copy of the base weights with one RoPE scaling, plus its peft adapters."""

    def __init__(self, spec: InstanceSpec, model: torch.nn.Module | None = None) -> None:
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
        self.peft: Any | None = None  # PeftModel wrapping `base` once an adapter is loaded
        self.signature = rope_signature(self.base.config)
        # Several prompts' first chunks may be prefilled as one packed row (engine._prefill).
        self.can_pack_prefill = supports_packed_prefill(self.base)
        self._mixable: dict[str, bool] = {}  # adapter -> may share a mixed-batch forward
        self._aux_wrappers: list[torch.nn.Module] = []  # peft modules_to_save/token wrappers

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
        return [] if self.peft is None else list(self.peft.peft_config)

    def load_adapter(self, name: str, adapter_dir: Path) -> None:
        from peft import PeftModel

        if self.peft is None:
            self.peft = PeftModel.from_pretrained(
                self.base, adapter_dir, adapter_name=name, is_trainable=False
            ).eval()
        else:
            self.peft.load_adapter(adapter_dir, adapter_name=name, is_trainable=False)
        self._aux_wrappers = _aux_wrappers(self.peft)
        self._mixable[name] = supports_mixed_batch(self.peft, name)
        logger.info(
            "loaded adapter %s into group %s (mixed batches: %s)",
            name,
            self.signature,
            self._mixable[name],
        )

    def unload_adapter(self, name: str) -> None:
        assert self.peft is not None
        self._mixable.pop(name, None)
        if len(self.peft.peft_config) == 1:
            # Last one: remove the LoRA layers entirely so base requests pay no peft overhead.
            self.base = self.peft.unload().eval()
            self.peft = None
            self._aux_wrappers = []
        else:
            self.peft.delete_adapter(name)
            self._aux_wrappers = _aux_wrappers(self.peft)

    def can_mix(self, adapter: str | None) -> bool:
        """Whether rows of `adapter` (None = the base) may share a forward with other adapters'
        rows; False for an adapter that is not loaded here."""
        return adapter is None or self._mixable.get(adapter, False)

    def forward_rows(self, adapters: Sequence[str | None], **inputs: Any) -> Any:
        """One forward of the batch in `inputs` where row i runs with adapters[i] (None = the
        plain base): the model output, as `model(**inputs)` returns it.

        A batch on one adapter is a plain forward with that adapter active (no per-row
        gather/scatter); several adapters go through peft's mixed batch, which every one of
        them must support (`can_mix`)."""
        distinct = set(adapters)
        if len(distinct) == 1:
            with self.activate(next(iter(distinct))) as model:
                return model(**inputs)
        cannot = sorted(str(a) for a in distinct if not self.can_mix(a))
        if cannot:
            raise ValueError(f"adapters {cannot} cannot share a forward with other adapters")
        assert self.peft is not None  # can_mix is False for every adapter without one
        names = [BASE_ROW if a is None else a for a in adapters]
        # The active adapter's config still steers PeftModel.forward (e.g. aLoRA offsets):
        # make it one of this batch's plain-LoRA adapters.
        first = next(n for n in names if n != BASE_ROW)
        if self.peft.active_adapter != first:
            self.peft.set_adapter(first)
        with self._aux_wrappers_bypassed():
            try:
                return self.peft(**inputs, adapter_names=names)
            except BaseException:
                _drop_leaked_adapter_name_hooks(self.peft)
                raise

    @contextmanager
    def _aux_wrappers_bypassed(self) -> Iterator[None]:
        """Route modules_to_save / trainable-token wrappers to their original module.

        No row of a mixed batch uses them (their adapters are not mixable), but peft would
        still look every row's adapter up in them and fail (KeyError, or TypeError on norms)."""
        enabled = [w for w in self._aux_wrappers if not w.disable_adapters]
        for wrapper in enabled:
            wrapper.enable_adapters(False)
        try:
            yield
        finally:
            for wrapper in enabled:
                wrapper.enable_adapters(True)

    @contextmanager
    def activate(self, adapter: str | None) -> Iterator[torch.nn.Module]:
        """The module to call for requests of `adapter` (None = the plain base)."""
        if self.peft is None:
            if adapter is not None:
                raise KeyError(f"adapter {adapter!r} is not loaded")
            yield self.base
        elif adapter is None:
            with self.peft.disable_adapter():
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


def supports_mixed_batch(peft_model: Any, name: str) -> bool:
    """Whether peft 0.21 can serve adapter `name` in a mixed-adapter batch (`adapter_names`).

    Mirrors what peft refuses or gets wrong: non-LoRA tuners, LoRA variants (DoRA is refused,
    aLoRA needs offsets), LoRA on multi-head attention or on parameters (`target_parameters`),
    and modules_to_save / trainable tokens (their wrappers cannot mix norms and look up every
    row's adapter in their own modules)."""
    from peft import PeftType
    from peft.tuners.lora import LoraLayer, ParamWrapper
    from peft.tuners.lora.layer import MultiheadAttention

    config = peft_model.peft_config[name]
    if config.peft_type != PeftType.LORA or getattr(config, "use_dora", False):
        return False
    for module in peft_model.modules():
        if isinstance(module, LoraLayer):
            owns = name in module.lora_A or name in module.lora_embedding_A
            if owns and (
                isinstance(module, MultiheadAttention | ParamWrapper) or name in module.lora_variant
            ):
                return False
    return not any(name in wrapper._adapters for wrapper in _aux_wrappers(peft_model))


def _aux_wrappers(peft_model: Any) -> list[torch.nn.Module]:
    from peft.utils.other import AuxiliaryTrainingWrapper

    return [m for m in peft_model.modules() if isinstance(m, AuxiliaryTrainingWrapper)]


def _drop_leaked_adapter_name_hooks(peft_model: Any) -> None:
    """Remove the `adapter_names` pre-forward hooks peft left behind after a failed forward.

    WHY: peft 0.21's `LoraModel._enable_peft_forward_hooks` removes them after its `yield`
    without a try/finally, so when the forward raises they stay registered and every later
    forward of this instance — any batch, any adapter — would run with the failed batch's
    adapter names."""
    from peft.tuners.lora.model import _adapter_names_pre_forward_hook

    for module in peft_model.modules():
        hooks = module._forward_pre_hooks
        for hook_id, hook in list(hooks.items()):
            if isinstance(hook, functools.partial) and hook.func is _adapter_names_pre_forward_hook:
                del hooks[hook_id]
                module._forward_pre_hooks_with_kwargs.pop(hook_id, None)


@dataclass
class _Resident:
    signature: str
    pins: int = 0


class AdapterPool:
    """LRU of resident adapters over the group instances (used from the scheduler thread only)."""

    def __init__(self, default: ModelInstance, *, max_loaded: int) -> None:
        if max_loaded < 1:
            raise ValueError("max_loaded must be >= 1")
        self.default = default
        self.max_loaded = max_loaded
        self.instances: dict[str, ModelInstance] = {default.signature: default}
        self._resident: OrderedDict[str, _Resident] = OrderedDict()
        self.evictions: list[str] = []  # history, for metrics and tests

    @property
    def resident(self) -> list[str]:
        """Loaded adapter names, least recently used first."""
        return list(self._resident)

    def instance_for(self, adapter: str | None) -> ModelInstance:
        if adapter is None:
            return self.default
        return self.instances[self._resident[adapter].signature]

    def acquire(self, name: str, location: str) -> ModelInstance | None:
        """Pin `name` (loading it, evicting the LRU unpinned adapter if needed) and return its
        instance; None when the pool is full of adapters that running requests still use."""
        if name in self._resident:
            self._resident.move_to_end(name)
            self._resident[name].pins += 1
            return self.instances[self._resident[name].signature]
        if len(self._resident) >= self.max_loaded and not self._evict_one():
            return None
        adapter_dir = resolve_adapter_dir(location)
        instance = self._instance_for_config(adapter_config(adapter_dir))
        instance.load_adapter(name, adapter_dir)
        self._resident[name] = _Resident(signature=instance.signature, pins=1)
        return instance

    def release(self, name: str) -> None:
        self._resident[name].pins -= 1

    def unload_all(self) -> None:
        """Drop every adapter and group instance: the default base is left as it was given."""
        for name in list(self._resident):
            signature = self._resident.pop(name).signature
            self.instances[signature].unload_adapter(name)
        self.instances = {self.default.signature: self.default}

    def _evict_one(self) -> bool:
        victim = next((n for n, r in self._resident.items() if r.pins == 0), None)
        if victim is None:
            return False
        signature = self._resident.pop(victim).signature
        instance = self.instances[signature]
        instance.unload_adapter(victim)
        self.evictions.append(victim)
        if instance is not self.default and not instance.adapters:
            del self.instances[signature]  # frees that group's copy of the base weights
        return True

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
                )
            )
        return self.instances[signature]
