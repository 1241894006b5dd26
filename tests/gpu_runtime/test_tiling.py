"""Sequence-tiled MLP: same numbers, bounded slices, untouched module tree."""

from __future__ import annotations

import torch

from gpu_runtime import train as trainer
from gpu_runtime.contract import TrainConfig
from gpu_runtime.tiling import decoder_mlps, disable_tiled_mlp, enable_tiled_mlp

LENGTH = 50
CHUNK = 8


def _build(tiny_model_dir, tmp_path, **overrides):
    config = TrainConfig(
        base_model=str(tiny_model_dir),
        output_dir=str(tmp_path / "out"),
        context_length=256,
        lora_dropout=0.0,
        dtype="float32",
        **overrides,
    )
    torch.manual_seed(0)  # identical LoRA init in every build
    model = trainer.build_model(config, torch.device("cpu"), torch.float32)
    model.train()
    return model


def _step(model):
    """Loss and LoRA gradients of one packed row (two documents)."""
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(10, 500, (1, LENGTH), generator=g)
    position_ids = torch.cat([torch.arange(30), torch.arange(LENGTH - 30)])[None]
    model.zero_grad()
    loss = model(input_ids=input_ids, position_ids=position_ids, labels=input_ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def _record_mlp_lengths(model) -> list[int]:
    """Sequence lengths every MLP's gate projection receives (forward and recompute)."""
    seen: list[int] = []
    for mlp in decoder_mlps(model):
        mlp.gate_proj.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))
    return seen


def test_tiled_mlp_gives_the_same_loss_and_gradients(tiny_model_dir, tmp_path):
    plain = _build(tiny_model_dir, tmp_path, mlp_chunk_size=0)
    tiled = _build(tiny_model_dir, tmp_path, mlp_chunk_size=CHUNK)
    plain_loss, plain_grads = _step(plain)
    tiled_loss, tiled_grads = _step(tiled)
    torch.testing.assert_close(tiled_loss, plain_loss, rtol=1e-6, atol=1e-6)
    assert plain_grads.keys() == tiled_grads.keys() and len(plain_grads) > 0
    assert any(g.abs().max() > 0 for g in plain_grads.values())
    for name, grad in plain_grads.items():
        torch.testing.assert_close(tiled_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_training_runs_the_mlp_on_slices_only(tiny_model_dir, tmp_path):
    tiled = _build(tiny_model_dir, tmp_path, mlp_chunk_size=CHUNK)
    seen = _record_mlp_lengths(tiled)
    _step(tiled)
    assert seen and max(seen) <= CHUNK
    # control: without tiling the MLP sees the whole row
    plain = _build(tiny_model_dir, tmp_path, mlp_chunk_size=0)
    seen_plain = _record_mlp_lengths(plain)
    _step(plain)
    assert max(seen_plain) == LENGTH


def test_inference_and_short_rows_use_the_original_forward(tiny_model_dir, tmp_path):
    tiled = _build(tiny_model_dir, tmp_path, mlp_chunk_size=CHUNK)
    seen = _record_mlp_lengths(tiled)
    with torch.no_grad():
        tiled(input_ids=torch.randint(10, 500, (1, LENGTH)))
    assert set(seen) == {LENGTH}


def test_tiling_keeps_the_state_dict_and_can_be_undone(tiny_model_dir, tmp_path):
    plain = _build(tiny_model_dir, tmp_path, mlp_chunk_size=0)
    tiled = _build(tiny_model_dir, tmp_path, mlp_chunk_size=CHUNK)
    assert list(tiled.state_dict()) == list(plain.state_dict())
    layers = tiled.get_base_model().config.num_hidden_layers
    assert enable_tiled_mlp(tiled, CHUNK) == layers  # idempotent re-enable
    disable_tiled_mlp(tiled)
    seen = _record_mlp_lengths(tiled)
    _step(tiled)
    assert max(seen) == LENGTH
    assert all("forward" not in mlp.__dict__ for mlp in decoder_mlps(tiled))
