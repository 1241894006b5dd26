"""Attention for packed long sequences: one kernel call per document, never an L×L mask.

Training packs several documents into one row of length L (see `packing.py`). The only
per-token structure the model needs is "which document does this token belong to", and the
position ids already say it: every document's positions restart at 0. From them we derive
`cu_seqlens` (the cumulative document lengths flash-attn's varlen kernels take) and run
causal attention inside each document separately.

Two back ends share that code path (`varlen_attention`):
  - CUDA + flash-attn: `flash_attn_varlen_func(q, k, v, cu_seqlens, ...)` — one kernel launch.
  - anywhere else: torch SDPA with `is_causal=True`, called once per document.
Neither builds a dense [L, L] mask, so attention memory grows with the longest document,
not with L². transformers' own "flash_attention_2" detects packed rows from position ids the
same way (`prepare_fa_kwargs_from_position_ids`: a document starts where position == 0), which
is why `select_attention_implementation` picks it on GPUs and ours elsewhere.

With a KV cache and no padding (chunked prefill, single-sequence decode: the query is the tail
of the keys) `cached_chunk_attention` runs without any mask: one unmasked SDPA of the chunk over
the cached keys and one causal SDPA of the chunk over itself, merged by their log-sum-exp
(flash-attn does the same in one call: its causal mask is bottom-right aligned). Only an explicit
padding mask (batched decode over left-padded caches) or a sliding window falls back to
transformers' plain SDPA with the mask transformers built.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, causal_mask_function, sdpa_mask
from transformers.modeling_utils import AttentionInterface

VARLEN_SDPA = "longtune_varlen_sdpa"
FLASH_ATTENTION_2 = "flash_attention_2"
AUTO = "auto"
# Names a caller may ask for explicitly; "auto" resolves to one of the first two.
KNOWN_IMPLEMENTATIONS: tuple[str, ...] = (FLASH_ATTENTION_2, VARLEN_SDPA, "sdpa", "eager")


# --------------------------------------------------------------------------- selection


def flash_attn_available() -> bool:
    """True when the flash-attn package can be imported (probe kept separate so tests can stub it)."""
    if importlib.util.find_spec("flash_attn") is None:
        return False
    try:
        import flash_attn  # noqa: F401
    except Exception:  # a broken CUDA build raises ImportError/OSError/RuntimeError at import
        return False
    return True


def cuda_available() -> bool:
    return torch.cuda.is_available()


def select_attention_implementation(requested: str = AUTO) -> str:
    """Resolve `requested` to a transformers `attn_implementation` name.

    "auto" means flash_attention_2 when it can really run (flash-attn importable AND a CUDA
    device), else LongTune's varlen SDPA, which has the same packed-sequence semantics on CPU.
    Explicit names are validated and passed through, so a misspelt option fails here, early,
    rather than deep inside model loading.
    """
    if requested == AUTO:
        return FLASH_ATTENTION_2 if (flash_attn_available() and cuda_available()) else VARLEN_SDPA
    if requested not in KNOWN_IMPLEMENTATIONS:
        raise ValueError(
            f"unknown attention implementation {requested!r}; expected 'auto' or one of "
            f"{KNOWN_IMPLEMENTATIONS}"
        )
    return requested


# --------------------------------------------------------------------------- boundaries


def cu_seqlens_from_position_ids(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Document boundaries of a packed batch, flattened row-major.

    position_ids: [B, L] (or [L]); a document starts wherever the position is 0, and every row
    starts a new document too (documents never span rows).
    Returns (cu_seqlens int32 [D + 1] with cu_seqlens[0] = 0 and cu_seqlens[-1] = B·L,
    max document length) — exactly the arguments of flash-attn's varlen functions.
    """
    if position_ids.dim() == 1:
        position_ids = position_ids.unsqueeze(0)
    batch, length = position_ids.shape
    starts = position_ids == 0  # [B, L]
    starts[:, 0] = True
    flat_starts = starts.reshape(-1).nonzero().view(-1)  # [D]
    total = torch.tensor([batch * length], device=position_ids.device)
    cu_seqlens = torch.cat([flat_starts, total]).to(torch.int32)  # [D + 1]
    max_seqlen = int(cu_seqlens.diff().max().item())
    return cu_seqlens, max_seqlen


# --------------------------------------------------------------------------- kernels


def _sliding_window_mask(length: int, window: int, device: torch.device) -> torch.Tensor:
    """Boolean [length, length] causal band (i attends j iff 0 <= i - j < window); per document only."""
    rows = torch.arange(length, device=device)[:, None]
    cols = torch.arange(length, device=device)[None, :]
    return (cols <= rows) & (rows - cols < window)


def _per_document_sdpa(
    query: torch.Tensor,  # [1, Hq, T, D]  (T = B·L, all rows concatenated)
    key: torch.Tensor,  # [1, Hkv, T, D]
    value: torch.Tensor,  # [1, Hkv, T, D]
    cu_seqlens: list[int],
    *,
    scaling: float | None,
    dropout: float,
    sliding_window: int | None,
) -> torch.Tensor:  # [1, Hq, T, D]
    """Causal SDPA on each document slice; memory is bounded by the longest document."""
    enable_gqa = query.shape[1] != key.shape[1]
    outputs = []
    for start, end in zip(cu_seqlens[:-1], cu_seqlens[1:], strict=True):
        q, k, v = (t[:, :, start:end] for t in (query, key, value))
        length = end - start
        if sliding_window is not None and length > sliding_window:
            band = _sliding_window_mask(length, sliding_window, query.device)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=band, dropout_p=dropout, scale=scaling, enable_gqa=enable_gqa
            )
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=dropout, scale=scaling, enable_gqa=enable_gqa
            )
        outputs.append(out)
    return torch.cat(outputs, dim=2)


def _flash_varlen(
    query: torch.Tensor,  # [1, Hq, T, D]
    key: torch.Tensor,  # [1, Hkv, T, D]
    value: torch.Tensor,  # [1, Hkv, T, D]
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    *,
    scaling: float | None,
    dropout: float,
    sliding_window: int | None,
) -> torch.Tensor:  # [1, Hq, T, D]
    """The same computation as `_per_document_sdpa`, in one flash-attn varlen kernel."""
    from flash_attn import flash_attn_varlen_func

    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [T, H, D]
    window = (sliding_window - 1, 0) if sliding_window is not None else (-1, -1)
    out = flash_attn_varlen_func(
        q,
        k,
        v,
        cu_seqlens_q=cu_seqlens,
        cu_seqlens_k=cu_seqlens,
        max_seqlen_q=max_seqlen,
        max_seqlen_k=max_seqlen,
        dropout_p=dropout,
        softmax_scale=scaling,
        causal=True,
        window_size=window,
    )  # [T, Hq, D]
    return out.transpose(0, 1).unsqueeze(0)


def varlen_attention(
    query: torch.Tensor,  # [B, Hq, L, D]
    key: torch.Tensor,  # [B, Hkv, L, D]
    value: torch.Tensor,  # [B, Hkv, L, D]
    position_ids: torch.Tensor,  # [B, L] or [1, L]
    *,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    use_flash: bool | None = None,
) -> torch.Tensor:  # [B, L, Hq, D] — the layout transformers' attention functions return
    """Causal attention restricted to documents delimited by position_ids == 0.

    `use_flash=None` picks flash-attn when the tensors are on CUDA and flash-attn imports; the
    rest of the path (boundaries, layout) is shared, so CPU tests exercise the GPU logic.
    """
    batch, heads, length, dim = query.shape
    if position_ids.shape[0] != batch:
        position_ids = position_ids.expand(batch, -1)
    cu_seqlens, max_seqlen = cu_seqlens_from_position_ids(position_ids)

    def flatten(t: torch.Tensor) -> torch.Tensor:  # [B, H, L, D] -> [1, H, B·L, D]
        return t.transpose(0, 1).reshape(1, t.shape[1], batch * length, dim)

    q, k, v = flatten(query), flatten(key), flatten(value)
    if use_flash is None:
        use_flash = query.is_cuda and flash_attn_available()
    if use_flash:
        out = _flash_varlen(
            q,
            k,
            v,
            cu_seqlens,
            max_seqlen,
            scaling=scaling,
            dropout=dropout,
            sliding_window=sliding_window,
        )
    else:
        out = _per_document_sdpa(
            q,
            k,
            v,
            cu_seqlens.tolist(),
            scaling=scaling,
            dropout=dropout,
            sliding_window=sliding_window,
        )
    # [1, Hq, B·L, D] -> [Hq, B, L, D] -> [B, L, Hq, D]
    return out.reshape(heads, batch, length, dim).permute(1, 2, 0, 3).contiguous()


def _cpu_attention_with_lse(
    query: torch.Tensor,  # [B, H, Lq, D]
    key: torch.Tensor,  # [B, H, Lk, D]
    value: torch.Tensor,  # [B, H, Lk, D]
    *,
    causal: bool,
    scaling: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:  # out [B, H, Lq, D], lse float32 [B, H, Lq]
    """torch's CPU flash kernel, which also returns each query's log-sum-exp (public SDPA drops it)."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, 0.0, causal, scale=scaling
    )[:2]
    return out, lse


def _grouped_query_attention_with_lse(
    query: torch.Tensor,  # [B, Hq, Lq, D]
    key: torch.Tensor,  # [B, Hkv, Lk, D]
    value: torch.Tensor,  # [B, Hkv, Lk, D]
    *,
    scaling: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:  # out [B, Hq, Lq, D], lse [B, Hq, Lq]
    """Unmasked attention with GQA and no key/value copy.

    Without a mask every query row is independent, so the G query heads that share a KV head
    can be stacked along the query axis: [B, Hkv, G·Lq, D] against [B, Hkv, Lk, D] — the same
    head mapping as transformers' repeat_kv (query head h reads KV head h // G).
    """
    batch, q_heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    groups = q_heads // kv_heads
    stacked = query.reshape(batch, kv_heads, groups * q_len, dim)
    out, lse = _cpu_attention_with_lse(stacked, key, value, causal=False, scaling=scaling)
    return out.reshape(batch, q_heads, q_len, dim), lse.reshape(batch, q_heads, q_len)


def merge_attention_partials(
    out_a: torch.Tensor,  # [B, H, Lq, D]
    lse_a: torch.Tensor,  # [B, H, Lq]
    out_b: torch.Tensor,
    lse_b: torch.Tensor,
) -> torch.Tensor:  # [B, H, Lq, D] in out_a's dtype
    """Softmax over the union of two key sets, from each set's output and log-sum-exp."""
    lse = torch.logaddexp(lse_a, lse_b)
    weight_a = torch.exp(lse_a - lse).unsqueeze(-1)
    weight_b = torch.exp(lse_b - lse).unsqueeze(-1)
    return (out_a.float() * weight_a + out_b.float() * weight_b).to(out_a.dtype)


def cached_chunk_attention(
    query: torch.Tensor,  # [B, Hq, Lq, D]  the newest Lq tokens
    key: torch.Tensor,  # [B, Hkv, Lk, D]  cached keys followed by the chunk's own (Lk > Lq)
    value: torch.Tensor,  # [B, Hkv, Lk, D]
    *,
    scaling: float | None = None,
    use_flash: bool | None = None,
) -> torch.Tensor:  # [B, Lq, Hq, D]
    """Causal attention of a chunk that continues a KV cache, with no [Lq, Lk] mask.

    Query i (absolute position Lk - Lq + i) sees every cached key and chunk keys 0..i. That is
    the union of two plain problems: the chunk over the cache (no mask at all) and the chunk over
    itself (ordinary causal). Each gives an output and a log-sum-exp, and the softmax over the
    union is their LSE-weighted sum. On CUDA flash-attn computes it directly (its causal mask is
    aligned to the bottom-right corner when Lq < Lk).
    """
    batch, q_heads, q_len, dim = query.shape
    past = key.shape[2] - q_len
    if use_flash is None:
        use_flash = query.is_cuda and flash_attn_available()
    if use_flash:
        from flash_attn import flash_attn_func

        out = flash_attn_func(
            query.transpose(1, 2),
            key.transpose(1, 2),
            value.transpose(1, 2),
            softmax_scale=scaling,
            causal=True,
        )  # [B, Lq, Hq, D]
        return out.contiguous()
    if not query.device.type == "cpu":  # CUDA without flash-attn: one masked SDPA
        mask = torch.ones(q_len, key.shape[2], dtype=torch.bool, device=query.device).tril(past)
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, scale=scaling, enable_gqa=key.shape[1] != q_heads
        )
        return out.transpose(1, 2).contiguous()
    groups = q_heads // key.shape[1]
    out_past, lse_past = _grouped_query_attention_with_lse(
        query, key[:, :, :past], value[:, :, :past], scaling=scaling
    )
    chunk_key = key[:, :, past:].repeat_interleave(groups, dim=1)  # [B, Hq, Lq, D], small
    chunk_value = value[:, :, past:].repeat_interleave(groups, dim=1)
    out_chunk, lse_chunk = _cpu_attention_with_lse(
        query, chunk_key, chunk_value, causal=True, scaling=scaling
    )
    out = merge_attention_partials(out_past, lse_past, out_chunk, lse_chunk)
    return out.transpose(1, 2).contiguous()


# --------------------------------------------------------------------------- transformers glue


def varlen_sdpa_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,  # [B, Hq, Lq, D]
    key: torch.Tensor,  # [B, Hkv, Lk, D]
    value: torch.Tensor,  # [B, Hkv, Lk, D]
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers AttentionInterface entry point (signature of `sdpa_attention_forward`).

    The decoder layers forward `position_ids` in kwargs. Packed/training calls (no mask, no
    cache: Lq == Lk) take the varlen path; everything else is plain SDPA with the given mask.
    """
    position_ids = kwargs.get("position_ids")
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if (
        attention_mask is None
        and causal
        and query.shape[2] < key.shape[2]
        and not (dropout and module.training)
    ):
        # `varlen_mask` skipped the mask: the query is the unpadded tail of the keys.
        return cached_chunk_attention(query, key, value, scaling=scaling), None
    varlen_ok = (
        attention_mask is None
        and position_ids is not None
        and causal
        and query.shape[2] == key.shape[2]
        and query.shape[2] > 1
        and kwargs.get("cache") is None
    )
    if not varlen_ok:
        return sdpa_attention_forward(
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
    output = varlen_attention(
        query,
        key,
        value,
        position_ids,
        scaling=scaling,
        dropout=dropout,
        sliding_window=kwargs.get("sliding_window"),
    )
    return output, None


def varlen_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    mask_function: Callable | None = None,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor | None:
    """AttentionMaskInterface entry: no mask at all when the attention function needs none.

    Without this, `create_causal_mask` would see packed position ids and build an [L, L] mask
    (sdpa_mask) that the varlen path throws away. A mask is only built where the fallback SDPA
    path needs one: a real padding mask or a non-causal/windowed pattern. A chunk that continues
    a cache (chunked prefill, unpadded decode) needs none: see `cached_chunk_attention`. Sliding-window models reach here via
    `create_sliding_window_causal_mask` and get the same treatment (the window is applied
    per document in `varlen_attention`).
    """
    no_padding = attention_mask is None or bool(attention_mask[:, -kv_length:].all())
    plain_causal = mask_function is causal_mask_function and kwargs.get("local_size") is None
    if no_padding and q_length == kv_length:
        return None
    if no_padding and plain_causal and kv_offset == 0 and q_offset + q_length == kv_length:
        return None  # the query continues the cache: cached_chunk_attention needs no mask
    return sdpa_mask(
        batch_size=batch_size,
        q_length=q_length,
        kv_length=kv_length,
        q_offset=q_offset,
        kv_offset=kv_offset,
        mask_function=mask_function,
        attention_mask=attention_mask,
        **kwargs,
    )


def register_varlen_attention(
    name: str = VARLEN_SDPA, attention_function: Callable = varlen_sdpa_attention_forward
) -> None:
    """Make `name` usable as `attn_implementation` (idempotent; done at import)."""
    AttentionInterface.register(name, attention_function)
    AttentionMaskInterface.register(name, varlen_mask)


register_varlen_attention()
