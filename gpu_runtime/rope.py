"""RoPE context extension: turn (method, target length) into a transformers-5 config change.

The scaling chosen at training time is written into the saved config (`rope_parameters`,
raised `max_position_embeddings`) so inference applies exactly the same scaling.

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
from gpu_runtime.contract import DEFAULT_ROPE_METHOD, ROPE_METHODS, RopeMethod

__all__ = [
    "DEFAULT_ROPE_METHOD",
    "ROPE_METHODS",
    "RopeMethod",
    "apply_rope_scaling",
    "head_dim",
    "original_context_length",
    "rope_parameters_for",
    "rope_theta",
]


def original_context_length(config: Any) -> int:
    """The context the base model was pre-trained at, even if it was already extended once."""
    recorded = getattr(config, "longtune_rope", None) or {}
    if recorded.get("original_context_length"):
        return int(recorded["original_context_length"])
    params = getattr(config, "rope_parameters", None) or {}
    return int(params.get("original_max_position_embeddings") or config.max_position_embeddings)


def rope_theta(config: Any) -> float:
    """The base model's theta (before any NTK rescaling LongTune applied)."""
    recorded = getattr(config, "longtune_rope", None) or {}
    if recorded.get("base_rope_theta"):
        return float(recorded["base_rope_theta"])
    params = getattr(config, "rope_parameters", None) or {}
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    return float(theta if theta is not None else 10000.0)


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

    factor = target / original context; max_position_embeddings is raised to the target.
    """
    original = original_context_length(config)
    new = copy.deepcopy(config)
    factor = max(1.0, target_context / original)
    new.rope_parameters = rope_parameters_for(
        method, factor, original, rope_theta(config), head_dim(config)
    )
    if method == "dynamic":
        # HF's dynamic NTK scales by current_length / max_position_embeddings: keep the original.
        new.max_position_embeddings = original
    else:
        new.max_position_embeddings = max(int(target_context), original)
    # What LongTune asked for, kept beside the HF keys so a saved model says how it was extended.
    new.longtune_rope = {
        "method": method,
        "factor": factor,
        "original_context_length": original,
        "context_length": int(target_context),
        "base_rope_theta": rope_theta(config),
    }
    return new
