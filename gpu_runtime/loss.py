"""Causal-LM cross-entropy without ever holding [tokens × vocab] logits.

At 128K tokens and a 128K vocabulary the full logits are 16G floats (64 GB in fp32) — more
than the rest of training put together. `chunked_causal_lm_loss` walks over the tokens in
chunks; a custom autograd.Function keeps only the inputs and recomputes each chunk's logits in
backward, so one [chunk, vocab] block (plus its gradient) exists at any moment, in forward and
in backward. It returns the same value and gradients as F.cross_entropy on the full logits.

The log-sum-exp is computed in place on that block, never with `torch.logsumexp`: that call
allocates its own [chunk, vocab] temporary (exp(logits - max)), so it doubled the loss's
transient — at a 1024-token chunk and a 32K vocabulary 2 × 131 MB in fp32, a cost every
sequence-parallel rank pays whatever its share of the tokens (benchmarks/results/
sequence_parallel_4ranks_long.md). Instead the row max m [c, 1] is taken, the block itself is
turned into exp(logits - m) and lse = log(row sum) + m; the backward does the same and divides
by the row sum in place, which is the softmax. The target's logit is gathered before the block
is overwritten. Each chunk's block is also deleted before the next is computed: rebinding the
name would keep the previous block alive while its successor is allocated — two blocks again.

Label convention: labels are aligned with the inputs (labels[t] is token t or -100) and are
shifted here: position t is trained to predict labels[t + 1]; the last position of each row
predicts nothing. For packed rows the caller must put -100 on the first token of every
document (`packing.pack_examples` does), so no position learns to predict across a document
boundary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """[..., L] aligned labels -> [..., L] next-token targets (last position gets -100)."""
    pad = torch.full_like(labels[..., :1], IGNORE_INDEX)
    return torch.cat([labels[..., 1:], pad], dim=-1)


def _chunk_logits(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    # hidden [c, H] @ weight.T [H, V] -> [c, V], upcast to fp32 for a stable log-softmax
    return F.linear(hidden, weight, bias).float()


def _exp_shifted_in_place(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [c, V] -> exp(logits - m) in the same storage; returns (m [c, 1], row sum [c, 1]).

    No second [c, V] buffer: amax and sum reduce to [c, 1], sub_ and exp_ write in place.
    """
    m = logits.amax(dim=-1, keepdim=True)  # [c, 1]
    logits.sub_(m).exp_()  # [c, V], each row's largest entry is exp(0) = 1
    return m, logits.sum(dim=-1, keepdim=True)  # [c, 1], [c, 1] (>= 1, so log is finite)


def _logsumexp_in_place(logits: torch.Tensor) -> torch.Tensor:
    """log(sum(exp(logits), -1)) [c, 1]; overwrites logits [c, V] with exp(logits - m)."""
    m, row_sum = _exp_shifted_in_place(logits)
    return row_sum.log_().add_(m)  # [c, 1]


def _softmax_in_place(logits: torch.Tensor) -> torch.Tensor:
    """softmax(logits, -1) written into logits [c, V] itself; returns it."""
    _, row_sum = _exp_shifted_in_place(logits)
    return logits.div_(row_sum)  # [c, V] / [c, 1]


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Sum of token losses; saves (hidden, weight, bias, targets) only, recomputes logits."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size):  # hidden [N, H], targets [N]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_size):
            chunk_targets = targets[start : start + chunk_size]
            if not (chunk_targets != IGNORE_INDEX).any():
                continue
            logits = _chunk_logits(hidden[start : start + chunk_size], weight, bias)  # [c, V]
            counted = chunk_targets != IGNORE_INDEX  # [c]
            # CE = logsumexp(logits) - logits[target], summed over counted rows; the target's
            # logit first, since the block is overwritten by exp(logits - m) below
            picked = logits.gather(1, chunk_targets.clamp(min=0)[:, None]).squeeze(1)  # [c]
            lse = _logsumexp_in_place(logits).squeeze(1)  # [c]; logits now exp(logits - m)
            total += ((lse - picked) * counted).sum()
            del logits  # freed before the next chunk's logits exist, not when rebound
        ctx.save_for_backward(hidden, weight, bias, targets)
        ctx.chunk_size = chunk_size
        return total

    @staticmethod
    def backward(ctx, grad_total):
        hidden, weight, bias, targets = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
        grad_bias = (
            torch.zeros_like(bias, dtype=torch.float32) if need_bias and bias is not None else None
        )
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            chunk_targets = targets[start : start + ctx.chunk_size]  # [c]
            counted = chunk_targets != IGNORE_INDEX  # [c]
            if not counted.any():
                continue
            chunk_hidden = hidden[start : start + ctx.chunk_size]  # [c, H]
            # d(sum CE)/d logits = softmax - one_hot(target), zero on ignored rows
            grad_logits = _chunk_logits(chunk_hidden, weight, bias)  # [c, V], softmaxed in place
            _softmax_in_place(grad_logits)  # [c, V]
            rows = counted.nonzero().view(-1)
            grad_logits[rows, chunk_targets[rows]] -= 1.0
            grad_logits[~counted] = 0.0
            grad_logits *= grad_total  # [c, V] fp32
            if grad_hidden is not None:
                grad_hidden[start : start + ctx.chunk_size] = (
                    grad_logits.to(weight.dtype) @ weight
                ).to(hidden.dtype)  # [c, H]
            if grad_weight is not None:  # += [V, c] @ [c, H], accumulated in place
                grad_weight.addmm_(grad_logits.T, chunk_hidden.float())  # [V, H]
            if grad_bias is not None:
                grad_bias += grad_logits.sum(0)  # [V]
            # freed before the next chunk's logits exist, not when the name is rebound
            del grad_logits
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(bias.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None


def chunked_causal_lm_loss(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    chunk_size: int = 1024,
    lm_head_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over counted tokens, and how many tokens were counted.

    hidden_states: [N, H] (or [B, L, H]) final-normed hidden states of ONE row of N tokens
    (or B rows); labels: [N] (or [B, L]) aligned with the inputs, -100 = no loss. Shifting is
    done per row. With no counted token the loss is 0 (still differentiable) and the count 0.
    """
    if hidden_states.shape[:-1] != labels.shape:
        raise ValueError(
            f"hidden_states {tuple(hidden_states.shape)} and labels {tuple(labels.shape)} "
            "must share their leading dimensions"
        )
    return chunked_target_loss(
        hidden_states,
        lm_head_weight,
        shift_labels(labels),
        chunk_size=chunk_size,
        lm_head_bias=lm_head_bias,
    )


def chunked_target_loss(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk_size: int = 1024,
    lm_head_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """`chunked_causal_lm_loss` with the targets already shifted (targets[t] is what position
    t predicts, -100 = no loss). Why separate: a sequence-parallel rank holds a slice of a row,
    whose last token predicts the FIRST token of the next rank's slice, so the shift must happen
    on the whole row before it is cut (sequence_parallel.shard_batch), never on the slice.
    """
    if hidden_states.shape[:-1] != targets.shape:
        raise ValueError(
            f"hidden_states {tuple(hidden_states.shape)} and targets {tuple(targets.shape)} "
            "must share their leading dimensions"
        )
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    flat_targets = targets.reshape(-1)  # [N]
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1])  # [N, H]
    count = int((flat_targets != IGNORE_INDEX).sum().item())
    total = _ChunkedCrossEntropy.apply(
        hidden, lm_head_weight, lm_head_bias, flat_targets, chunk_size
    )
    return total / max(count, 1), count
