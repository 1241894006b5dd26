"""The chunked loss equals full-logits cross-entropy, value and gradients."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from gpu_runtime.loss import IGNORE_INDEX, chunked_causal_lm_loss


def _reference(hidden, weight, labels, bias=None):
    logits = F.linear(hidden, weight, bias).float()  # [N, V] — what the chunked loss avoids
    targets = torch.cat([labels[1:], torch.tensor([IGNORE_INDEX])])
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)


def _inputs(n=37, h=16, v=50, seed=0, with_bias=False):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, requires_grad=True)
    weight = torch.randn(v, h, generator=g, requires_grad=True)
    bias = torch.randn(v, generator=g, requires_grad=True) if with_bias else None
    labels = torch.randint(0, v, (n,), generator=g)
    labels[torch.rand(n, generator=g) < 0.3] = IGNORE_INDEX
    return hidden, weight, bias, labels


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 37, 1024])
@pytest.mark.parametrize("with_bias", [False, True])
def test_value_and_gradients_match_full_cross_entropy(chunk_size, with_bias):
    hidden, weight, bias, labels = _inputs(with_bias=with_bias)
    loss, count = chunked_causal_lm_loss(
        hidden, weight, labels, chunk_size=chunk_size, lm_head_bias=bias
    )
    params = [hidden, weight] + ([bias] if with_bias else [])
    grads = torch.autograd.grad(loss, params)
    expected = _reference(hidden, weight, labels, bias)
    expected_grads = torch.autograd.grad(expected, params)
    assert count == int((labels[1:] != IGNORE_INDEX).sum())
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_shift_predicts_next_token():
    # vocab of 3, hidden = one-hot logits: position t strongly predicts token t's label + 1
    weight = torch.eye(3) * 20
    hidden = torch.eye(3)[[0, 1, 2]]  # logits favour token 0, 1, 2
    good, _ = chunked_causal_lm_loss(hidden, weight, torch.tensor([9, 0, 1]).clamp(max=2))
    bad, _ = chunked_causal_lm_loss(hidden, weight, torch.tensor([0, 1, 2]))
    assert good < 1e-6 < bad


def test_batched_rows_are_shifted_per_row():
    hidden, weight, _, labels = _inputs(n=20)
    rows_h, rows_l = hidden.reshape(2, 10, -1), labels.reshape(2, 10)
    loss, count = chunked_causal_lm_loss(rows_h, weight, rows_l, chunk_size=7)
    per_row = [chunked_causal_lm_loss(rows_h[i], weight, rows_l[i]) for i in range(2)]
    assert count == per_row[0][1] + per_row[1][1]
    expected = sum(loss_i * count_i for loss_i, count_i in per_row) / count
    torch.testing.assert_close(loss, expected)


def test_no_counted_tokens_gives_zero_loss_and_zero_grad():
    hidden, weight, _, labels = _inputs()
    loss, count = chunked_causal_lm_loss(hidden, weight, torch.full_like(labels, IGNORE_INDEX))
    loss.backward()
    assert count == 0 and loss.item() == 0.0
    assert hidden.grad.abs().sum() == 0 and weight.grad.abs().sum() == 0


def test_frozen_lm_head_gets_no_gradient():
    hidden, weight, _, labels = _inputs()
    weight.requires_grad_(False)
    loss, _ = chunked_causal_lm_loss(hidden, weight, labels, chunk_size=8)
    loss.backward()
    assert weight.grad is None and hidden.grad is not None


def test_bfloat16_inputs_give_bfloat16_grads_close_to_fp32():
    hidden, weight, _, labels = _inputs()
    h16 = hidden.detach().bfloat16().requires_grad_()
    w16 = weight.detach().bfloat16().requires_grad_()
    loss, _ = chunked_causal_lm_loss(h16, w16, labels, chunk_size=8)
    loss.backward()
    assert loss.dtype == torch.float32 and h16.grad.dtype == torch.bfloat16
    expected = _reference(h16.float(), w16.float(), labels)
    torch.testing.assert_close(loss, expected, rtol=1e-3, atol=1e-3)


def test_only_one_chunk_of_logits_is_alive(monkeypatch):
    """Peak logits size seen by the lm-head projection is [chunk, V], never [N, V]."""
    import gpu_runtime.loss as loss_module

    shapes = []
    real_linear = loss_module.F.linear

    def recording_linear(x, w, b=None):
        out = real_linear(x, w, b)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(loss_module.F, "linear", recording_linear)
    hidden, weight, _, labels = _inputs(n=64, v=50)
    labels[:] = 1
    loss, _ = chunked_causal_lm_loss(hidden, weight, labels, chunk_size=16)
    loss.backward()
    assert shapes and max(s[0] for s in shapes) == 16
    assert len(shapes) == 8  # 4 chunks recomputed once in backward


def test_shape_mismatch_is_rejected():
    hidden, weight, _, labels = _inputs()
    with pytest.raises(ValueError, match="leading dimensions"):
        chunked_causal_lm_loss(hidden, weight, labels[:-1])


def _peak_bytes_allocated(run, trace_path) -> int:
    """Most bytes the CPU allocator held during run() above what it held when run() began.

    The profiler's memory events (profile_memory=True) report every allocation and free made
    while profiling, internal temporaries of ops included (torch.logsumexp's exp buffer), so the
    running sum of their sizes is the live bytes allocated since the start.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    prof.export_chrome_trace(str(trace_path))
    trace = json.loads(trace_path.read_text())
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    memory = sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"])
    assert memory, "the profiler recorded no allocation"
    live = peak = 0
    for event in memory:
        live += event["args"]["Bytes"]
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("train_head", [False, True])
def test_forward_and_backward_hold_one_fp32_block_at_a_time(tmp_path, train_head):
    """No second [chunk, vocab] buffer: the log-sum-exp and the softmax are taken in place, and
    a chunk's block is freed before the next one is computed (the old torch.logsumexp version
    peaked at 2 blocks in forward and in backward)."""
    chunk, vocab, hidden_size, tokens = 64, 4096, 16, 256
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(tokens, hidden_size, generator=g, requires_grad=True)  # [N, H]
    weight = torch.randn(vocab, hidden_size, generator=g, requires_grad=train_head)  # [V, H]
    labels = torch.randint(0, vocab, (tokens,), generator=g)  # [N]
    block = chunk * vocab * 4  # one [c, V] fp32 block: 1 MiB
    slack = block // 10  # [c]-sized vectors, index tensors, the [c, H] products
    # what backward must hold besides the block: the gradients it returns (fp32 here)
    gradients = hidden.numel() * 4 + (weight.numel() * 4 if train_head else 0)

    outputs = {}

    def forward():
        outputs["loss"], _ = chunked_causal_lm_loss(hidden, weight, labels, chunk_size=chunk)

    forward_peak = _peak_bytes_allocated(forward, tmp_path / "forward.json")
    backward_peak = _peak_bytes_allocated(outputs["loss"].backward, tmp_path / "backward.json")
    assert block <= forward_peak <= block + slack
    assert block <= backward_peak <= block + gradients + slack
