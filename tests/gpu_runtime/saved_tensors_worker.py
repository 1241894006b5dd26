"""One torchrun rank of test_sequence_parallel.py's saved-tensor inventory (not a test module).

What it measures: the bytes autograd keeps for backward (``saved_tensors_hooks``, storages
counted once, the layer's parameters left out) of one HF Llama decoder layer forward, once
under Ulysses over the world (this rank's L/N tokens, head-sharded attention) and once in
plain single-process form on the same number of tokens. The memory planner's Ulysses term
(``memory_planner._ulysses_replicated_kv_units``) says what the difference must be; the test
compares the two. Writes <out>/rank-<r>.json.

    torchrun --nproc_per_node N tests/gpu_runtime/saved_tensors_worker.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from gpu_runtime import sequence_parallel as sp
from gpu_runtime.attention import VARLEN_SDPA
from gpu_runtime.contract import ULYSSES

HIDDEN, HEADS, KV_HEADS, INTERMEDIATE = 64, 4, 2, 96  # head_dim 16; GQA 4/2
LENGTH = 64  # one row, documents of 20, 30 and 14 tokens (several cross slice boundaries)
DOCUMENTS = (20, 30, 14)


def saved_bytes(layer: torch.nn.Module, run) -> int:
    """Bytes of the distinct storages autograd saves while `run()` builds the graph."""
    params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = run()
    out = out[0] if isinstance(out, tuple) else out
    out.sum().backward()  # the graph is whole: backward runs through the exchange
    return sum(storages.values())


def layer_for(
    implementation: str, dtype: torch.dtype = torch.float32
) -> tuple[LlamaDecoderLayer, LlamaRotaryEmbedding]:
    config = LlamaConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        num_hidden_layers=1,
        vocab_size=16,
    )
    config._attn_implementation = implementation
    torch.manual_seed(0)
    return LlamaDecoderLayer(config, 0).to(dtype), LlamaRotaryEmbedding(config)


def main(out_dir: Path) -> None:
    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    tokens = LENGTH // world
    positions = torch.cat([torch.arange(n) for n in DOCUMENTS])[None]  # [1, L]
    generator = torch.Generator().manual_seed(rank)
    x = torch.randn(1, tokens, HIDDEN, generator=generator)  # [1, L/N, hidden]

    layout = sp.SequenceLayout(world, rank, 1, 0, dist.group.WORLD, tuple(range(world)), ULYSSES)
    shard = sp.SequenceShard(layout, positions)
    local_positions = positions[:, rank * tokens : (rank + 1) * tokens]
    layer, rope = layer_for(sp.SEQUENCE_PARALLEL_ATTENTION)
    source = x.clone().requires_grad_(True)
    ulysses = saved_bytes(
        layer,
        lambda: layer(
            source,
            position_embeddings=rope(source, local_positions),
            position_ids=local_positions,
            attention_mask=None,
            sequence_shard=shard,
        ),
    )

    single_positions = torch.arange(tokens)[None]  # one document of the rank's token count
    layer, rope = layer_for(VARLEN_SDPA)
    source = x.clone().requires_grad_(True)
    single = saved_bytes(
        layer,
        lambda: layer(
            source,
            position_embeddings=rope(source, single_positions),
            position_ids=single_positions,
            attention_mask=None,
        ),
    )
    # the same single-process layer computing in bf16 (the RMSNorms' fp32 copies appear)
    layer, rope = layer_for(VARLEN_SDPA, torch.bfloat16)
    source = x.to(torch.bfloat16).requires_grad_(True)
    single_bf16 = saved_bytes(
        layer,
        lambda: layer(
            source,
            position_embeddings=rope(source, single_positions),
            position_ids=single_positions,
            attention_mask=None,
        ),
    )
    record = {
        "world_size": world,
        "tokens": tokens,
        "ulysses_saved_bytes": ulysses,
        "single_saved_bytes": single,
        "single_bf16_saved_bytes": single_bf16,
        "shape": {
            "hidden": HIDDEN,
            "heads": HEADS,
            "kv_heads": KV_HEADS,
            "intermediate": INTERMEDIATE,
        },
    }
    (out_dir / f"rank-{rank}.json").write_text(json.dumps(record))
    dist.barrier()  # leave together (gpu_runtime.distributed.shutdown says why)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
