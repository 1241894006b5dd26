"""KV caches for continuous batching: one cache per sequence, stacked left-padded to decode.

Each sequence owns a transformers `DynamicCache` of shape [1, Hkv, L_i, D] per layer while it
is prefilled (chunk by chunk). Sequences of one decode group — every running request of a
RoPE group, whatever LoRA adapter each uses (the adapter only changes the projections that
produce K/V, not the cache layout) — are then stacked into a single batched cache
[B, Hkv, max L_i, D] with *left* padding, so every row's newest token sits in the last column
and one forward of `input_ids [B, 1]` decodes all of them:

    row 0:  pad pad  k0 k1 k2 k3      attention_mask 0 0 1 1 1 1   position_ids 4
    row 1:   k0  k1  k2 k3 k4 k5      attention_mask 1 1 1 1 1 1   position_ids 6

RoPE is applied from explicit `position_ids` (the row's real length), never from the column,
and the padded keys are masked out, so a row's logits equal those of decoding it alone.
The batch is rebuilt (unstack → stack) only when its membership changes — a request joins
after prefill or leaves when finished — not on every step; between changes, decoding grows
the batched cache in place exactly like `model.generate` does.

A packed prefill (several prompts' first chunks in one row, engine._prefill) produces one
cache [1, Hkv, n_1 + n_2 + ..., D]; `split_packed_cache` cuts it back into per-sequence caches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

LayerKV = tuple[torch.Tensor, torch.Tensor]  # keys, values: [B, Hkv, L, D]


def cache_length(cache: DynamicCache | None) -> int:
    return 0 if cache is None else cache.get_seq_length()


def cache_layers(cache: DynamicCache) -> list[LayerKV]:
    return [(layer.keys, layer.values) for layer in cache.layers]


@dataclass
class BatchedCache:
    """A left-padded batched cache and the mask/pads that describe its rows."""

    cache: DynamicCache  # per layer [B, Hkv, T, D]
    attention_mask: torch.Tensor  # [B, T] long; 1 = real token, 0 = left pad
    pads: list[int]  # left pad of each row (T - L_i at stacking time)

    @property
    def batch_size(self) -> int:
        return len(self.pads)

    def extend_mask(self) -> torch.Tensor:
        """The mask for one more decoded column ([B, T + 1]); stored for the next step."""
        ones = self.attention_mask.new_ones((self.batch_size, 1))
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)
        return self.attention_mask


def stack_caches(caches: list[DynamicCache]) -> BatchedCache:
    """Left-pad and concatenate single-sequence caches into one batched cache."""
    lengths = [cache_length(c) for c in caches]
    total = max(lengths)
    per_sequence = [cache_layers(c) for c in caches]
    num_layers = len(per_sequence[0])
    layers: list[LayerKV] = []
    for layer in range(num_layers):
        keys = [_left_pad(per_sequence[i][layer][0], total) for i in range(len(caches))]
        values = [_left_pad(per_sequence[i][layer][1], total) for i in range(len(caches))]
        layers.append((torch.cat(keys, dim=0), torch.cat(values, dim=0)))  # [B, Hkv, T, D]
    device = layers[0][0].device
    pads = [total - n for n in lengths]
    columns = torch.arange(total, device=device)[None, :]  # [1, T]
    mask = (columns >= torch.tensor(pads, device=device)[:, None]).long()  # [B, T]
    return BatchedCache(cache=DynamicCache(layers), attention_mask=mask, pads=pads)


def unstack_cache(batched: BatchedCache) -> list[DynamicCache]:
    """Split a batched cache back into per-sequence caches without their left padding."""
    layers = cache_layers(batched.cache)
    caches = []
    for row, pad in enumerate(batched.pads):
        rows = [(k[row : row + 1, :, pad:], v[row : row + 1, :, pad:]) for k, v in layers]
        caches.append(DynamicCache(rows))
    return caches


def split_packed_cache(cache: DynamicCache, lengths: list[int]) -> list[DynamicCache]:
    """Per-sequence caches from the cache of one packed prefill forward.

    A packed prefill concatenates several prompts' first chunks into one row, so each layer
    holds [1, Hkv, sum(lengths), D] with sequence i in the token span that follows the spans
    of sequences 0..i-1. Cutting that span out gives exactly the cache prefilling sequence i
    alone would have built (its keys attended nothing outside their span, and RoPE was applied
    from its own positions). The new caches own copies (`DynamicLayer.update` concatenates), so
    the packed block is freed as soon as the caller drops it."""
    layers = cache_layers(cache)
    total = sum(lengths)
    if any(keys.shape[2] != total for keys, _ in layers):
        raise ValueError(f"packed cache holds {layers[0][0].shape[2]} tokens, spans sum {total}")
    caches = []
    start = 0
    for length in lengths:
        end = start + length
        caches.append(DynamicCache([(k[:, :, start:end], v[:, :, start:end]) for k, v in layers]))
        start = end
    return caches


def _left_pad(tensor: torch.Tensor, total: int) -> torch.Tensor:
    """[1, H, L, D] → [1, H, total, D] with zeros in front (masked out, never attended)."""
    missing = total - tensor.shape[2]
    if missing == 0:
        return tensor
    zeros = tensor.new_zeros((*tensor.shape[:2], missing, tensor.shape[3]))
    return torch.cat([zeros, tensor], dim=2)
