"""Sequence-tiled MLP: the feed-forward block run over slices of the sequence, each recomputed.

WHY: with per-layer activation checkpointing the peak of a long-context step is one decoder
layer being recomputed in backward, and most of that layer is its MLP: per token it holds the
gate, up, activation and product tensors of width `intermediate_size` (2.7× hidden for Llama)
plus their gradients. The MLP is position-wise — token i's output depends on token i only —
so it can run on sequence slices without changing a single number. Each slice is its own
non-reentrant checkpoint: during the layer's recompute only the slice inputs are kept, and
the backward re-runs one slice at a time, so the MLP's working memory is bounded by
`chunk_size` tokens instead of the whole sequence (the idea of Arctic Long Sequence
Training's TiledMLP, done with torch's nested checkpointing so DDP/FSDP hooks see an
ordinary autograd graph).

Cost: one more MLP forward per slice in backward. Only used while training with gradients
and only when the sequence is longer than one slice; inference and short rows call the
original forward untouched. The module tree (and so every state-dict key) is unchanged:
the override lives on the instance.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

_ORIGINAL_FORWARD = "_longtune_untiled_forward"


def decoder_mlps(model: nn.Module) -> list[nn.Module]:
    """The feed-forward block of every decoder layer (Llama, Mistral, Qwen2: `layer.mlp` next
    to `layer.self_attn`)."""
    return [
        module.mlp
        for module in model.modules()
        if isinstance(getattr(module, "mlp", None), nn.Module) and hasattr(module, "self_attn")
    ]


def tiled_forward(
    forward: Callable[[torch.Tensor], torch.Tensor],
    hidden_states: torch.Tensor,  # [B, L, H]
    chunk_size: int,
) -> torch.Tensor:  # [B, L, H]
    """`forward` over `chunk_size`-token slices of dim 1, each slice checkpointed."""
    if not torch.is_grad_enabled() or hidden_states.shape[1] <= chunk_size:
        return forward(hidden_states)
    slices = hidden_states.split(chunk_size, dim=1)
    outputs = [checkpoint(forward, piece, use_reentrant=False) for piece in slices]
    return torch.cat(outputs, dim=1)


def enable_tiled_mlp(model: nn.Module, chunk_size: int) -> int:
    """Run every decoder MLP of `model` in `chunk_size`-token checkpointed slices while
    training; idempotent (re-enabling changes the size). Returns how many MLPs were tiled."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    mlps = decoder_mlps(model)
    for mlp in mlps:
        original = mlp.__dict__.get(_ORIGINAL_FORWARD) or mlp.forward
        mlp.__dict__[_ORIGINAL_FORWARD] = original

        def forward(
            self: nn.Module, hidden_states: torch.Tensor, _original=original
        ) -> torch.Tensor:
            return tiled_forward(_original, hidden_states, chunk_size)

        mlp.forward = types.MethodType(forward, mlp)
    return len(mlps)


def disable_tiled_mlp(model: nn.Module) -> None:
    """Restore the original MLP forwards (e.g. before exporting or serving the model)."""
    for mlp in decoder_mlps(model):
        if _ORIGINAL_FORWARD in mlp.__dict__:
            del mlp.__dict__["forward"]
            del mlp.__dict__[_ORIGINAL_FORWARD]
