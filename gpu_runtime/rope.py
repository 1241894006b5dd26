"""RoPE context extension: turn (method, target length) into a transformers-5 config change.

The scaling chosen at training time is written into the saved config (`rope_parameters`,
raised `max_position_embeddings`, and the run's `ContextSpec` under `ContextSpec.CONFIG_KEY`)
so inference applies exactly the same scaling and serving reads the same limit back
(`context_of`). `apply_context` applies a planned spec verbatim; `apply_rope_scaling` (a
method and a length, for library callers) plans the spec once and then does the same.

Methods (factor = target_context / original_context):
  linear  Position Interpolation (Chen et al. 2023; Together's LLaMA-2-7B-32K recipe)
  yarn    YaRN: interpolate only the low-frequency dimensions, keep high ones (Peng et al.)
  dynamic NTK-aware scaling of theta, growing with the current length (HF "dynamic"; it
          measures length against max_position_embeddings, so that stays at the original)
  ntk     static NTK-aware scaling: theta × factor^(d/(d-2)) (bloc97), no other change
  llama3  Llama 3.1's frequency-dependent scaling
  none    no change (extrapolation / direct fine-tuning)
"""

from __future__ import annotations

import copy
from typing import Any

# The method names and the default are shared with the web tier, which may import only the
# torch-free contract module; re-exported here for the GPU side.
from gpu_runtime.contract import DEFAULT_ROPE_METHOD, ROPE_METHODS, ContextSpec, RopeMethod

__all__ = [
    "DEFAULT_ROPE_METHOD",
    "ROPE_METHODS",
    "ContextSpec",
    "RopeMethod",
    "apply_context",
    "apply_rope_scaling",
    "context_of",
    "head_dim",
    "original_context_length",
    "rope_parameters_for",
    "rope_theta",
]


def _config_dict(config: Any) -> dict[str, Any]:
    return {
        key: getattr(config, key, None)
        for key in (
            ContextSpec.CONFIG_KEY,
            ContextSpec.LEGACY_CONFIG_KEY,
            "max_position_embeddings",
        )
    }


def _recorded(config: Any) -> ContextSpec | None:
    """The spec LongTune recorded in `config` (current or legacy key), None for a plain base."""
    raw = _config_dict(config)
    if not (raw[ContextSpec.CONFIG_KEY] or raw[ContextSpec.LEGACY_CONFIG_KEY]):
        return None
    return ContextSpec.of_model_config(raw)


def context_of(config: Any) -> ContextSpec:
    """The context a loaded model is served at: its recorded spec, else its own native one."""
    recorded = _recorded(config)
    if recorded is not None:
        return recorded
    return ContextSpec.native(int(config.max_position_embeddings))


def original_context_length(config: Any) -> int:
    """The context the base model was pre-trained at, even if it was already extended once."""
    recorded = _recorded(config)
    if recorded is not None:
        return recorded.original_length
    params = getattr(config, "rope_parameters", None) or {}
    return int(params.get("original_max_position_embeddings") or config.max_position_embeddings)


def rope_theta(config: Any) -> float:
    """The base model's theta (before any NTK rescaling LongTune applied)."""
    legacy = getattr(config, ContextSpec.LEGACY_CONFIG_KEY, None) or {}
    if legacy.get("base_rope_theta"):
        return float(legacy["base_rope_theta"])
    params = getattr(config, "rope_parameters", None) or {}
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    theta = float(theta if theta is not None else 10000.0)
    recorded = _recorded(config)
    if recorded is not None and recorded.rope_method == "ntk" and recorded.scaled:
        # rope_parameters_for raised theta by factor^(d/(d-2)); undo exactly that.
        dim = head_dim(config)
        theta /= recorded.rope_factor ** (dim / (dim - 2))
    return theta


def head_dim(config: Any) -> int:
    return int(
        getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    )


def rope_parameters_for(
    method: str, factor: float, original_max_position: int, theta: float, rotary_dim: int = 128
) -> dict[str, Any]:
    """The `rope_parameters` dict transformers 5 reads for `method` at `factor`."""
    if method not in ROPE_METHODS:
        raise ValueError(f"unknown rope scaling method {method!r}; expected one of {ROPE_METHODS}")
    if factor < 1.0:
        raise ValueError(f"rope scaling factor must be >= 1, got {factor}")
    if method == "none" or factor == 1.0:
        return {"rope_type": "default", "rope_theta": theta}
    if method == "ntk":
        scaled = theta * factor ** (rotary_dim / (rotary_dim - 2))
        return {"rope_type": "default", "rope_theta": scaled}
    params: dict[str, Any] = {"rope_type": method, "factor": float(factor), "rope_theta": theta}
    if method in ("yarn", "llama3"):
        params["original_max_position_embeddings"] = int(original_max_position)
    if method == "llama3":
        params.update(low_freq_factor=1.0, high_freq_factor=4.0)
    return params


def apply_rope_scaling(config: Any, method: str, target_context: int) -> Any:
    """Return a copy of `config` extended to `target_context` tokens with `method`.

    For callers that know only a length: the spec is planned here, once (factor = target /
    original context), then applied verbatim by `apply_context`.
    """
    spec = ContextSpec.plan(
        original_length=original_context_length(config),
        target_length=int(target_context),
        rope_method=method,
    )
    return apply_context(config, spec)


def apply_context(config: Any, spec: ContextSpec) -> Any:
    """Return a copy of `config` served at `spec`: its method and factor used as given.

    The spec must start from this model's original context: a spec planned for another base
    would scale the wrong way, so that fails loudly. max_position_embeddings becomes the target
    (for dynamic NTK it stays the original: HF scales by current length / that value).
    """
    original = original_context_length(config)
    if spec.original_length != original:
        raise ValueError(
            f"context spec starts from {spec.original_length} tokens but this model's original "
            f"context is {original}"
        )
    new = copy.deepcopy(config)
    new.rope_parameters = rope_parameters_for(
        spec.rope_method, spec.rope_factor, original, rope_theta(config), head_dim(config)
    )
    if spec.rope_method == "dynamic":
        new.max_position_embeddings = original
    else:
        new.max_position_embeddings = max(spec.target_length, original)
    # The spec itself, beside the HF keys: what serving reads back (context_of).
    setattr(new, ContextSpec.CONFIG_KEY, spec.to_dict())
    if hasattr(new, ContextSpec.LEGACY_CONFIG_KEY):
        delattr(new, ContextSpec.LEGACY_CONFIG_KEY)
    return new
