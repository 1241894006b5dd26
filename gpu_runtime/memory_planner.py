"""Peak memory per rank of one training step, and the cheapest layout that fits an accelerator.

Why this module exists: a 150K-token fine-tune that does not fit its GPU fails minutes into
the job, after the data was fetched and the model loaded; the control plane must refuse it at
``POST /v1/fine_tuning/jobs`` instead, and plan the jobs it accepts with a layout that fits
(activation checkpointing, the tiled MLP, activation offload, FSDP, sequence parallelism).
So the web tier must be able to run this arithmetic: like ``gpu_runtime.contract`` this
module imports nothing but the standard library and the contract (tests/platform/
test_web_process.py holds that), and it never touches torch.

What it models is LongTune's own step (``gpu_runtime.train``), tensor by tensor, not a
generic rule of thumb:

- weights, gradients, AdamW states. LoRA: the frozen base in its storage dtype (the compute
  dtype, or 4-bit NF4 for the "on paper" QLoRA comparisons) and fp32 adapters with fp32 grads
  and two fp32 moments. Full: fp32 master weights, fp32 grads and moments (16 B/param),
  sharded by FSDP's degree.
- activations of one micro-batch of ``context_length x micro_batch_size`` tokens, of which
  each rank holds ``1/sequence_parallel``. With activation checkpointing, each decoder
  layer keeps only its input; one layer at a time is recomputed in backward and its saved
  tensors (listed in ``_attention_saved_units``) live until its backward ends. The tiled MLP
  keeps the MLP's [tokens x intermediate] tensors to one ``mlp_chunk_size`` slice.
- the loss: ``gpu_runtime.loss`` never builds [tokens x vocab]; one fp32 [chunk x vocab] block
  exists at a time, in forward and in backward (its log-sum-exp and softmax are taken in
  place, so no second block for ``torch.logsumexp``'s temporary).
- attention: flash-attn / per-document SDPA never build [L x L]; their backward keeps an fp32
  dq accumulator. Ulysses' head-sharded q/k/v/out replace the sequence-sharded ones byte for
  byte (only KV heads replicated over more ranks than there are heads add memory:
  ``_ulysses_replicated_kv_units``); ring saves K/V repeated to the query heads and its
  backward holds two K/V blocks and two fp32 block gradients in flight
  (``_ring_backward_extra_bytes``).
- buffers: DDP gradient buckets, FSDP's gathered layer (plus prefetch) and its reduce-scatter
  buffer, and a runtime reserve per accelerator (CUDA context + NCCL, or on CPU the Python +
  torch process itself).

The step peaks in one of two phases and the planner takes the larger: the LOSS phase (all
checkpoints, the decoder's final hidden states and their gradient, the loss chunk blocks) or
the LAYER phase (all checkpoints, one recomputed layer's saved tensors, the gradient flowing
into it, the attention backward's workspace and one MLP tile). Calibration:
``benchmarks/memory_planner.py`` compares the prediction with fresh-process peaks
(``ru_maxrss``) of the trainer's step on CPU; tests/gpu_runtime/test_memory_planner.py holds
the same comparison at small sizes.

Choosing a layout (``plan``): every layout the engine can run on the given number of devices
is priced and the cheapest one that fits wins. "Cheapest" = fewest accelerators first (a job
holding fewer devices leaves the rest of the pool to other jobs, and communication is never
free), then the least extra compute: no recompute before checkpointing (+1 forward), before
the tiled MLP, before offload (host transfers), before sequence parallelism (collectives in
every layer). Sequence-parallel mode rule: the engine's own, ``contract.
resolve_sequence_parallel_mode`` (``default_sequence_parallel_mode`` only delegates): Ulysses
when the query heads split over the ranks and the KV heads either split too or divide the
ranks (each then replicated), else ring attention (any head count; K/V blocks around the ring).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from gpu_runtime.contract import (
    ALL_LINEAR,
    METHODS,
    resolve_sequence_parallel_mode,
    sequence_parallel_splits,
    strict_from_dict,
)

GIB = 1024**3
MIB = 1024**2

DTYPE_BYTES: dict[str, float] = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0}
# bitsandbytes NF4 with double quantisation: 4 bits + ~0.127 bits of absmax per weight.
WEIGHT_DTYPE_BYTES: dict[str, float] = {**DTYPE_BYTES, "nf4": 0.5 + 0.127 / 8}
SEQUENCE_PARALLEL_MODES: tuple[str, ...] = ("ulysses", "ring")
AUTO = "auto"
# The linear layers of a Llama decoder layer, by what they read and write.
ATTENTION_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_LINEARS = ("gate_proj", "up_proj", "down_proj")
DDP_BUCKET_BYTES = 25 * MIB  # torch DDP's default bucket_cap_mb
# Compute overhead of each memory-saving knob, for ordering layouts only (not a time model):
# checkpointing recomputes every layer's forward (~1/3 of a step's FLOPs), the tiled MLP adds
# only per-slice launch overhead on top, offload copies every checkpoint to host and back,
# sequence parallelism adds collectives to every layer.
OVERHEAD = {
    "checkpointing": 0.33,
    "tiled_mlp": 0.02,
    "offload": 0.10,
    "sequence_parallel": 0.05,
    "optimizer_offload": 0.30,  # AdamW on the host CPU, grads and weights over PCIe every step
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ModelShape:
    """The architecture facts memory depends on (a Llama-style decoder: RMSNorm, RoPE,
    grouped-query attention, SwiGLU MLP). ``params`` defaults to the count these imply."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tie_embeddings: bool = False
    params: int | None = None

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "intermediate", "heads", "kv_heads", "vocab"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError(
                f"heads: hidden {self.hidden} must divide into {self.heads} heads, and heads "
                f"into {self.kv_heads} kv_heads"
            )
        if self.params is not None and (not _is_int(self.params) or self.params < 1):
            raise ValueError(f"params: must be null or an integer >= 1, got {self.params!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_hidden(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def layer_params(self) -> int:
        """One decoder layer: q, o [H x H]; k, v [H x Hkv]; gate, up, down [H x I]; 2 norms."""
        h, kv, i = self.hidden, self.kv_hidden, self.intermediate
        return 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h

    @property
    def embedding_params(self) -> int:
        """Input embeddings + output head (one matrix when tied) + the final norm."""
        return self.vocab * self.hidden * (1 if self.tie_embeddings else 2) + self.hidden

    @property
    def parameter_count(self) -> int:
        if self.params is not None:
            return self.params
        return self.layers * self.layer_params + self.embedding_params

    def linear_shape(self, name: str) -> tuple[int, int]:
        """(in_features, out_features) of a decoder layer's linear ``name``."""
        h, kv, i = self.hidden, self.kv_hidden, self.intermediate
        return {
            "q_proj": (h, h),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (h, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }[name]

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> ModelShape:
        """From a transformers ``config.json`` (as a dict) of a Llama-style model."""
        heads = int(config["num_attention_heads"])
        return cls(
            layers=int(config["num_hidden_layers"]),
            hidden=int(config["hidden_size"]),
            intermediate=int(config["intermediate_size"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            vocab=int(config["vocab_size"]),
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ModelShape:
        return strict_from_dict(cls, data, lists_to_tuples=True)


# Published architectures the benchmark's "on paper" table uses (config.json of the models).
LLAMA3_8B = ModelShape(
    layers=32, hidden=4096, intermediate=14336, heads=32, kv_heads=8, vocab=128256
)
LLAMA3_70B = ModelShape(
    layers=80, hidden=8192, intermediate=28672, heads=64, kv_heads=8, vocab=128256
)


@dataclass(frozen=True)
class TrainingSetup:
    """What the job asks for (fixed by the request; the planner does not change it)."""

    context_length: int
    micro_batch_size: int = 1
    method: str = "lora"
    lora_r: int = 16
    lora_target_modules: tuple[str, ...] = (ALL_LINEAR,)
    lora_dropout: float = 0.05  # > 0: peft keeps a dropped-out copy of each adapted input
    compute_dtype: str = "bfloat16"  # activations; "float32" on CPU
    # LoRA's frozen base weights: the compute dtype by default (what build_model loads), or
    # "nf4" for QLoRA comparisons. Full fine-tuning keeps fp32 master weights regardless.
    base_weight_dtype: str | None = None
    optimizer_state_dtype: str = "float32"  # AdamW's two moments

    def __post_init__(self) -> None:
        if not _is_int(self.context_length) or self.context_length < 2:
            raise ValueError(
                f"context_length: must be an integer >= 2, got {self.context_length!r}"
            )
        if not _is_int(self.micro_batch_size) or self.micro_batch_size < 1:
            raise ValueError("micro_batch_size: must be an integer >= 1")
        if self.method not in METHODS:
            raise ValueError(f"method: must be one of {METHODS}, got {self.method!r}")
        if not _is_int(self.lora_r) or self.lora_r < 1:
            raise ValueError("lora_r: must be an integer >= 1")
        if self.compute_dtype not in DTYPE_BYTES:
            raise ValueError(f"compute_dtype: must be one of {tuple(DTYPE_BYTES)}")
        if self.base_weight_dtype is not None and self.base_weight_dtype not in WEIGHT_DTYPE_BYTES:
            raise ValueError(f"base_weight_dtype: must be one of {tuple(WEIGHT_DTYPE_BYTES)}")
        if self.optimizer_state_dtype not in DTYPE_BYTES:
            raise ValueError(f"optimizer_state_dtype: must be one of {tuple(DTYPE_BYTES)}")

    @property
    def tokens(self) -> int:
        return self.context_length * self.micro_batch_size

    def adapted(self, name: str) -> bool:
        """Does LoRA adapt the decoder linear ``name``? (peft matches by module-name suffix)."""
        if self.method != "lora":
            return False
        targets = set(self.lora_target_modules)
        return ALL_LINEAR in targets or name in targets

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TrainingSetup:
        return strict_from_dict(cls, data, lists_to_tuples=True)


@dataclass(frozen=True)
class Layout:
    """How a step runs: the parallel layout and the memory knobs (what the planner chooses).

    ``sequence_parallel`` is TrainConfig's name for the sequence-parallel degree; world size
    = ``data_parallel x sequence_parallel``; FSDP shards over ``fsdp`` of those ranks (1: no
    sharding; DDP replicas when the world is larger)."""

    data_parallel: int = 1
    sequence_parallel: int = 1
    sequence_parallel_mode: str = "ulysses"
    fsdp: int = 1
    activation_checkpointing: bool = True
    offload_activations: bool = False
    mlp_chunk_size: int = 2048  # 0: no tiling
    loss_chunk_size: int = 1024  # 0: full [tokens x vocab] logits (a plain HF step)
    # Full fine-tuning only: fp32 master weights and AdamW states on the host, the device
    # keeps compute-dtype weights and grads (DeepSpeed ZeRO-Offload, what ALST's single-GPU
    # runs use). LongTune's engine does not do this; the planner offers it "on paper" only.
    offload_optimizer: bool = False

    def __post_init__(self) -> None:
        for name in ("data_parallel", "sequence_parallel", "fsdp"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"{name}: must be an integer >= 1")
        if self.sequence_parallel_mode not in SEQUENCE_PARALLEL_MODES:
            raise ValueError(
                f"sequence_parallel_mode: must be one of {SEQUENCE_PARALLEL_MODES}, "
                f"got {self.sequence_parallel_mode!r}"
            )
        if self.world_size % self.fsdp:
            raise ValueError(f"fsdp: {self.fsdp} must divide the world size {self.world_size}")
        for name in ("mlp_chunk_size", "loss_chunk_size"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name}: must be an integer >= 0")

    @property
    def world_size(self) -> int:
        return self.data_parallel * self.sequence_parallel

    @property
    def overhead(self) -> float:
        """Relative extra compute of the memory knobs (ordering only, see OVERHEAD)."""
        extra = 0.0
        if self.activation_checkpointing:
            extra += OVERHEAD["checkpointing"]
            if self.mlp_chunk_size:
                extra += OVERHEAD["tiled_mlp"]
        if self.offload_activations:
            extra += OVERHEAD["offload"]
        if self.offload_optimizer:
            extra += OVERHEAD["optimizer_offload"]
        if self.sequence_parallel > 1:
            extra += OVERHEAD["sequence_parallel"]
        return 1.0 + extra

    def describe(self) -> str:
        parts = [f"{self.world_size} rank{'s' if self.world_size > 1 else ''}"]
        if self.data_parallel > 1:
            parts.append(f"data parallel {self.data_parallel}")
        if self.sequence_parallel > 1:
            parts.append(
                f"sequence parallel {self.sequence_parallel} ({self.sequence_parallel_mode})"
            )
        if self.fsdp > 1:
            parts.append(f"FSDP {self.fsdp}")
        if self.activation_checkpointing:
            parts.append("activation checkpointing")
            if self.mlp_chunk_size:
                parts.append(f"tiled MLP {self.mlp_chunk_size}")
        if self.offload_activations:
            parts.append("activation offload")
        if self.offload_optimizer:
            parts.append("optimizer offload")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Layout:
        return strict_from_dict(cls, data, lists_to_tuples=True)


def default_sequence_parallel_mode(model: ModelShape, degree: int) -> str:
    """The scheme ``sequence_parallel_mode="auto"`` runs for this model on ``degree`` ranks.

    Why a delegate and not a rule of its own: a plan's layout is handed to the trainer
    verbatim (``finetuning/planning.py`` puts its mode in the TrainConfig), so the planner must
    price exactly what the engine's "auto" would run. Until 2026-12-02 the planner said
    "ulysses only when ``kv_heads % N == 0``" while the contract also takes Ulysses when each
    KV head is replicated over ``N / kv_heads`` ranks (Llama-3-8B on 16 ranks: the planner
    planned ring, "auto" ran Ulysses). Now there is one rule,
    ``contract.resolve_sequence_parallel_mode`` (its docstring gives the argument)."""
    return resolve_sequence_parallel_mode(AUTO, degree, model.heads, model.kv_heads)


@dataclass(frozen=True)
class Accelerator:
    """One device kind. ``usable_fraction`` leaves allocator headroom (fragmentation);
    ``runtime_reserve_bytes`` is what the process holds before any tensor of ours."""

    name: str
    memory_bytes: int
    runtime_reserve_bytes: int
    usable_fraction: float = 0.95
    gpu: bool = True  # activation offload moves tensors to host memory: GPU only
    flash_attention: bool = True  # flash-attn varlen kernels (else per-document SDPA)

    @property
    def usable_bytes(self) -> int:
        return int(self.memory_bytes * self.usable_fraction)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# CUDA context, cuBLAS workspaces and NCCL communicators: ~1 GiB per process on Hopper.
GPU_RUNTIME_RESERVE = 1 * GIB
# The CPU training process before and around its tensors: Python + torch + transformers +
# peft imported (~230 MB: train_memory's baseline minus its weights), plus what the first
# step allocates besides activations (autograd engine, oneDNN scratch, lazily imported modules).
# Calibrated ONCE, on train_memory.py's 4,096-token LongTune step (benchmarks/results/
# memory_planner.md states it); every other length is a prediction.
CPU_RUNTIME_RESERVE = 430 * MIB

ACCELERATORS: dict[str, Accelerator] = {
    a.name: a
    for a in (
        Accelerator("a100_80gb", 80 * GIB, GPU_RUNTIME_RESERVE),
        Accelerator("h100_80gb", 80 * GIB, GPU_RUNTIME_RESERVE),
        Accelerator("h200_141gb", 141 * GIB, GPU_RUNTIME_RESERVE),
        Accelerator("b200_192gb", 192 * GIB, GPU_RUNTIME_RESERVE),
    )
}
CPU = "cpu"


def cpu_accelerator(memory_bytes: int) -> Accelerator:
    """The CPU "device": its RAM is given (the machine's, or what a worker may use); the
    allocator runs with a fixed mmap threshold (benchmarks/train_memory.py), so no headroom."""
    return Accelerator(
        CPU,
        int(memory_bytes),
        CPU_RUNTIME_RESERVE,
        usable_fraction=1.0,
        gpu=False,
        flash_attention=False,
    )


def accelerator_named(name: str, cpu_memory_bytes: int | None = None) -> Accelerator:
    if name == CPU:
        if cpu_memory_bytes is None:
            raise ValueError("cpu: give the memory the CPU worker may use")
        return cpu_accelerator(cpu_memory_bytes)
    if name not in ACCELERATORS:
        raise ValueError(f"unknown accelerator {name!r}; known: {(CPU, *ACCELERATORS)}")
    return ACCELERATORS[name]


# --------------------------------------------------------------------------- the estimate

COMPONENTS: tuple[str, ...] = (
    "weights",
    "grads",
    "optimizer",
    "activations",
    "logits_loss",
    "attention_workspace",
    "buffers",
    "runtime",
)


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes per rank, split by component, at the phase where the step peaks."""

    breakdown: dict[str, int]
    peak_phase: str  # "loss" | "layer"
    host_bytes: int = 0  # activations offloaded to host memory (not on the device)

    @property
    def peak_bytes(self) -> int:
        return sum(self.breakdown.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "peak_bytes": self.peak_bytes,
            "peak_phase": self.peak_phase,
            "host_bytes": self.host_bytes,
            "breakdown": dict(self.breakdown),
        }


def _lora_params(model: ModelShape, setup: TrainingSetup) -> int:
    """Adapter parameters: A [r x in] + B [out x r] per adapted linear, in every layer."""
    per_layer = sum(
        setup.lora_r * sum(model.linear_shape(name))
        for name in (*ATTENTION_LINEARS, *MLP_LINEARS)
        if setup.adapted(name)
    )
    return per_layer * model.layers


def _attention_saved_units(model: ModelShape, setup: TrainingSetup, act: float) -> float:
    """Bytes per token (in units of ``hidden`` elements at ``act`` bytes each) that one
    decoder layer's attention half saves for backward, beyond the layer's input (the
    checkpoint). Inventory of HF's Llama layer, tensor by tensor (what
    ``torch.autograd.graph.saved_tensors_hooks`` sees; tests/gpu_runtime/
    test_sequence_parallel.py holds it against a real layer):

    - each RMSNorm (input and post-attention) saves its input in fp32 (``pow``/``* rsqrt``),
      its normalised ``x * rsqrt(...)`` cast back to the compute dtype (``weight *``) and,
      through the linears that read it, its output. The input norm's fp32 input is the
      checkpoint itself in fp32 (nothing extra) and an fp32 copy of it in 16 bits; the post
      norm's is the residual sum in fp32 and its fp32 copy in 16 bits (then the 16-bit sum
      itself is saved by no one).
    - RoPE saves no [tokens x hidden] tensor: ``q * cos`` and ``rotate_half(q) * sin`` keep
      cos/sin only, since those need no gradient (autograd saves a factor only for the other
      factor's gradient). The rotated q and k (1 + g) and v (g) are saved by the attention
      kernel, with its output (1); o_proj saves the output's contiguous [tokens x hidden] copy.
    - LoRA with dropout > 0 keeps a dropped-out copy of each adapted linear's input.

    (Until 2026-12-02 this counted q, k and rotate_half(q/k) as saved by RoPE and missed the
    norms' normalised tensors: +2 units per layer in fp32 with g = 1.)
    """
    g = model.kv_hidden / model.hidden  # kv tensors relative to hidden
    fp32_input = 4.0 / act  # an RMSNorm's input in fp32, in units of the compute dtype
    input_norm = (fp32_input if act < 4 else 0.0) + 1 + 1  # fp32 copy, normalised, output
    attention = (1 + g) + g + 1 + 1  # rotated q/k, v, kernel output, o_proj's input
    post_norm = fp32_input + 1 + 1  # fp32 residual sum (or its copy), normalised, output
    units = input_norm + attention + post_norm
    dropout = 0.0
    if setup.lora_dropout > 0:
        dropout = sum(1 for name in ("q_proj", "k_proj", "v_proj", "o_proj") if setup.adapted(name))
    return units + dropout


def _mlp_saved_units(model: ModelShape, setup: TrainingSetup, act: float) -> float:
    """Units (of hidden) one untiled SwiGLU MLP saves: gate, up, silu(gate), silu(gate)*up
    ([tokens x intermediate] each), + LoRA dropout copies of its inputs."""
    ratio = model.intermediate / model.hidden
    dropout = 0.0
    if setup.lora_dropout > 0:
        dropout = sum(1 for name in ("gate_proj", "up_proj") if setup.adapted(name))
        dropout += ratio if setup.adapted("down_proj") else 0.0
    return 4 * ratio + dropout


def _ulysses_replicated_kv_units(model: ModelShape, degree: int) -> float:
    """Units (of hidden) Ulysses saves per layer BEYOND the single-process inventory: only the
    KV heads replicated when the ranks outnumber them; 0 whenever ``kv_heads % degree == 0``.

    Why not the head-sharded q/k/v/out on top (what this planner counted until the 32K/64K
    per-rank measurements came out +18-21% high): the head-sharded copies REPLACE the tensors
    of ``_attention_saved_units``, they do not add to them. In
    ``gpu_runtime.sequence_parallel.ulysses_attention`` the rotated q/k and v of this rank's
    L/N tokens go only into ``_AllToAll``, which saves nothing for backward (its backward is
    the same exchange of the gradient), so they are freed once exchanged; the per-document
    kernel then saves the head-sharded q/k/v [B, H/N, L, D] and its output, which hold
    exactly the bytes of the [L/N, H, D] tensors the single-process kernel saves. The
    all-to-all back and the transposes after it save nothing either, and o_proj saves its
    [L/N x hidden] input as it does without sequence parallelism. (Checked with
    ``torch.autograd.graph.saved_tensors_hooks`` on one HF Llama layer: the same [t x hidden]
    units are saved per rank under Ulysses x 2 as in one process holding t tokens.)

    The exception: with fewer KV heads than ranks each rank receives lcm(Hkv, N)/N repeated
    KV heads over all L tokens (``repeat_kv_heads`` before the exchange), so its saved k and v
    are lcm(Hkv, N)/Hkv times the [t x kv_hidden] the inventory counts.
    """
    replicated = math.lcm(model.kv_heads, degree)
    return 2 * (replicated - model.kv_heads) * model.head_dim / model.hidden


def _ring_replicated_kv_units(model: ModelShape) -> float:
    """Units (of hidden) ring attention saves per layer BEYOND the single-process inventory:
    ``sequence_parallel.ring_attention`` repeats the KV heads to the query heads BEFORE the
    ring (one K/V block per query head travels), and ``_RingAttention`` saves those repeated
    k and v, [t x hidden] each, where one process's kernel saves [t x kv_hidden] each.
    0 without grouped-query attention."""
    return 2 * (1 - model.kv_hidden / model.hidden)


def _ring_backward_extra_bytes(model: ModelShape, t: int, act: float) -> float:
    """What ``_RingAttention.backward`` holds BEYOND the single-process attention backward
    (whose dq accumulator and log-sum-exp are ``attention_workspace`` for every layout), at
    its worst moment: the block gradient's exchange while a K/V block is still arriving.

    - the local K/V block ``torch.stack([k, v])`` and the one arriving from the previous rank
      (``_exchange`` allocates it before the step's kernels run): 2 x [2, t x hidden] in the
      compute dtype (KV heads already repeated to the query heads by ``ring_attention``),
    - the fp32 block gradient accumulator [2, t x hidden] that travels with the block, and the
      one arriving while it is sent (both alive until the send completes); the one-process
      kernel produces dk/dv [t x kv_hidden] in the compute dtype instead, so the difference is
      what ring adds.

    In fp32 the per-pair kernel outputs (dq/dk/dv of at most half a slice under zig-zag) are
    freed before the gradient exchange and stay under the arriving gradient, so they do not
    add. Measured by ``benchmarks/attention_memory.py`` (8 heads x 64, one attention op's fwd +
    bwd, per rank, peak above the RSS the backward began with, in units of [t x hidden] fp32,
    ring minus one process on the same t tokens): fp32 5.97 (N = 2 and 4; 4K documents or one
    16K document), this formula 6.0; fp32 with 2 KV heads 8.46, formula 7.5; bf16 with 2 KV
    heads 7.95, formula 7.25. CPU kernels only: flash-attn's on a GPU were not measured. (Until 2026-12-02 the planner counted two
    [t x kv_hidden] blocks and an fp32 out accumulator that is freed before backward: 5 units,
    missing the travelling gradients and the repetition to the query heads.)"""
    blocks = 2 * (2 * t * model.hidden * act)
    block_grads = 2 * (2 * t * model.hidden * 4.0)
    one_process_dk_dv = 2 * t * model.kv_hidden * act
    # 16-bit only: each block's dq/dk/dv come out of the kernel in the compute dtype and are
    # upcast (``_acc``) before they are added, so a block's fp32 copies (zig-zag blocks are
    # at most half a slice) exist beside the buffers above; in fp32 the kernel's outputs are
    # the fp32 tensors themselves. Measured (bf16, 2 of 8 KV heads): 7.95 units over one
    # process; without this term the formula says 5.75, with it 7.25.
    upcasts = 3 * math.ceil(t / 2) * model.hidden * 4.0 if act < 4 else 0.0
    return blocks + block_grads - one_process_dk_dv + upcasts


# A tiled MLP slice in backward: its recomputed gate/up/act/product plus their gradients
# (each [chunk x intermediate]) while the slice's backward runs.
MLP_TILE_UNITS_OF_INTERMEDIATE = 6


def estimate(
    model: ModelShape, setup: TrainingSetup, layout: Layout, accelerator: Accelerator
) -> MemoryEstimate:
    """Predicted peak memory of one rank during one micro-batch's forward + backward +
    optimizer step under ``layout`` on ``accelerator``."""
    act = DTYPE_BYTES[setup.compute_dtype]
    state = DTYPE_BYTES[setup.optimizer_state_dtype]
    sp, fsdp = layout.sequence_parallel, layout.fsdp
    t = math.ceil(setup.tokens / sp)  # tokens this rank holds
    unit = t * model.hidden * act  # one [t x hidden] activation, bytes
    params = model.parameter_count

    # ---- weights, grads, optimizer state
    host_states = 0.0
    if setup.method == "full" and layout.offload_optimizer:
        weights = params * act / fsdp  # compute-dtype copy; fp32 masters live on the host
        grads = params * act / fsdp
        optimizer = 0.0
        host_states = params * (4.0 + 2 * state) / fsdp
    elif setup.method == "full":
        weights = params * 4.0 / fsdp  # fp32 master weights (FSDP2 / autocast compute copies)
        grads = params * 4.0 / fsdp
        optimizer = params * 2 * state / fsdp
    else:
        base_dtype = setup.base_weight_dtype or setup.compute_dtype
        lora = _lora_params(model, setup)
        weights = params * WEIGHT_DTYPE_BYTES[base_dtype] / fsdp + lora * 4.0
        grads = lora * 4.0
        optimizer = lora * 2 * state

    # ---- buffers: communication and gathering
    buffers = 0.0
    if layout.world_size > 1 and fsdp == 1:
        buffers += min(grads, DDP_BUCKET_BYTES)  # DDP's bucket being all-reduced
    if fsdp > 1:
        gathered = model.layer_params * act  # one layer unsharded in the compute dtype
        root = model.embedding_params * act  # embeddings + head: gathered for the whole step
        buffers += 2 * gathered + root  # current layer + the prefetched next
        if setup.method == "full":
            buffers += model.layer_params * 4.0  # reduce-scatter of one layer's fp32 grads
    if setup.base_weight_dtype == "nf4" and setup.method == "lora":
        buffers += model.layer_params * act  # one layer dequantised for its matmuls

    # ---- activations
    checkpointed = layout.activation_checkpointing
    saved_attention = _attention_saved_units(model, setup, act)
    saved_mlp = _mlp_saved_units(model, setup, act)
    mlp_tiled = checkpointed and 0 < layout.mlp_chunk_size < t
    if checkpointed:
        on_device_checkpoints = min(model.layers, 2) if layout.offload_activations else model.layers
        host = model.layers * unit if layout.offload_activations else 0.0
        layer_inputs = on_device_checkpoints * unit  # one [t x hidden] per layer
        # the recomputed layer: attention half saved + the MLP's input/output around it
        if mlp_tiled:
            chunk = layout.mlp_chunk_size
            mlp_part = 0.0
            mlp_tile = MLP_TILE_UNITS_OF_INTERMEDIATE * chunk * model.intermediate * act
        else:
            mlp_part = saved_mlp * unit
            mlp_tile = 0.0
        layer_working = saved_attention * unit + mlp_part + mlp_tile
        layer_gradient = unit  # the gradient flowing into the layer being back-propagated
    else:
        host = 0.0
        layer_inputs = model.layers * (1 + saved_attention + saved_mlp) * unit
        layer_working = 0.0
        layer_gradient = unit

    # ---- attention workspace (backward): fp32 dq accumulator + log-sum-exp, per rank
    attention_workspace = t * model.hidden * 4.0 + t * model.heads * 4.0
    if sp > 1 and layout.sequence_parallel_mode == "ulysses":
        layer_working += _ulysses_replicated_kv_units(model, sp) * unit
    elif sp > 1:
        layer_working += _ring_replicated_kv_units(model) * unit
        attention_workspace += _ring_backward_extra_bytes(model, t, act)

    # ---- the loss phase: final hidden states + their gradient + loss chunk blocks
    chunk = layout.loss_chunk_size or t
    chunk = min(chunk, t)
    if layout.loss_chunk_size:
        # gpu_runtime.loss: one fp32 [chunk x vocab] block, its log-sum-exp (forward) and
        # softmax (backward) taken in place, freed before the next chunk's block exists
        loss_blocks = chunk * model.vocab * 4.0
    else:
        # plain step (F.cross_entropy on all logits): the compute-dtype logits, their fp32
        # upcast and the log-softmax's fp32 output, all [tokens x vocab]
        loss_blocks = 2 * t * model.vocab * 4.0 + t * model.vocab * act
    loss_hidden = 3 * unit  # last layer's output, final norm's output, d(loss)/d(hidden)

    loss_phase = {"activations": layer_inputs + loss_hidden, "logits_loss": loss_blocks}
    layer_phase = {
        "activations": layer_inputs + layer_working + layer_gradient,
        "attention_workspace": attention_workspace,
    }
    if sum(loss_phase.values()) >= sum(layer_phase.values()):
        phase, dynamic = "loss", loss_phase
    else:
        phase, dynamic = "layer", layer_phase
    breakdown = {
        "weights": weights,
        "grads": grads,
        "optimizer": optimizer,
        "activations": dynamic.get("activations", 0.0),
        "logits_loss": dynamic.get("logits_loss", 0.0),
        "attention_workspace": dynamic.get("attention_workspace", 0.0),
        "buffers": buffers,
        "runtime": float(accelerator.runtime_reserve_bytes),
    }
    return MemoryEstimate(
        {k: int(round(v)) for k, v in breakdown.items()}, phase, host_bytes=int(host + host_states)
    )


# --------------------------------------------------------------------------- choosing a layout


@dataclass(frozen=True)
class SearchSpace:
    """Which layouts ``plan`` may choose. The defaults are what LongTune's engine runs:
    LoRA replicates the base (DDP: ``lora_fsdp`` off), full fine-tuning shards over the whole
    world (FSDP2 on one mesh dimension), sequence parallelism up to the devices available."""

    mlp_chunk_size: int = 2048
    loss_chunk_size: int = 1024
    allow_sequence_parallel: bool = True
    allow_offload: bool = True
    lora_fsdp: bool = False  # shard LoRA's frozen base too (FSDP-QLoRA style; "on paper")
    optimizer_offload: bool = False  # full: AdamW on the host (ZeRO-Offload; "on paper")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _powers_of_two_up_to(n: int) -> list[int]:
    return [2**k for k in range(int(math.log2(n)) + 1)] if n >= 1 else []


def candidate_layouts(
    model: ModelShape,
    setup: TrainingSetup,
    accelerator: Accelerator,
    devices: int,
    search: SearchSpace = SearchSpace(),  # noqa: B008 - frozen, never mutated
) -> list[Layout]:
    """Every layout the search space allows on up to ``devices`` devices, cheapest first."""
    layouts = []
    for world in _powers_of_two_up_to(devices):
        degrees = _powers_of_two_up_to(world) if search.allow_sequence_parallel else [1]
        for sp in degrees:
            if sp > 1 and not sequence_parallel_splits(setup.context_length, sp):
                continue  # the engine cannot cut these rows into 2·sp chunks
            shard_options = [world] if setup.method == "full" else [1]
            if setup.method == "lora" and search.lora_fsdp and world > 1:
                shard_options = [1, world]
            for fsdp in shard_options:
                for checkpointing, tiled in ((False, False), (True, False), (True, True)):
                    offloads = (
                        [False, True] if (accelerator.gpu and search.allow_offload) else [False]
                    )
                    optimizer_offloads = [False]
                    if setup.method == "full" and search.optimizer_offload:
                        optimizer_offloads = [False, True]
                    for offload in offloads:
                        if offload and not checkpointing:
                            continue  # offload moves the checkpoints; nothing else to move
                        for offload_optimizer in optimizer_offloads:
                            layouts.append(
                                Layout(
                                    data_parallel=world // sp,
                                    sequence_parallel=sp,
                                    sequence_parallel_mode=default_sequence_parallel_mode(
                                        model, sp
                                    ),
                                    fsdp=fsdp,
                                    activation_checkpointing=checkpointing,
                                    offload_activations=offload,
                                    mlp_chunk_size=search.mlp_chunk_size if tiled else 0,
                                    loss_chunk_size=search.loss_chunk_size,
                                    offload_optimizer=offload_optimizer,
                                )
                            )
    # fewest devices, then least compute overhead, then more data parallelism (cheaper
    # collectives than sequence parallelism), then fewer shards
    return sorted(
        layouts, key=lambda lo: (lo.world_size, lo.overhead, lo.sequence_parallel, lo.fsdp)
    )


@dataclass(frozen=True)
class MemoryPlan:
    """The chosen layout on an accelerator, its estimate and whether it fits.

    When nothing fits, ``layout`` is the candidate with the smallest peak and ``fits`` is
    False; ``shortfall_bytes`` says by how much it misses."""

    accelerator: str
    devices: int  # devices available to the job
    memory_bytes: int  # per device
    usable_bytes: int  # per device, after allocator headroom
    layout: Layout
    estimate: MemoryEstimate
    fits: bool

    @property
    def shortfall_bytes(self) -> int:
        return max(0, self.estimate.peak_bytes - self.usable_bytes)

    @property
    def headroom_bytes(self) -> int:
        return max(0, self.usable_bytes - self.estimate.peak_bytes)

    def summary(self) -> str:
        peak = self.estimate.peak_bytes / GIB
        verdict = "fits" if self.fits else f"short by {self.shortfall_bytes / GIB:.1f} GiB"
        return (
            f"{self.layout.world_size}x {self.accelerator} ({self.memory_bytes / GIB:.0f} GiB): "
            f"{self.layout.describe()}; predicted peak {peak:.1f} GiB per rank, {verdict}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "accelerator": self.accelerator,
            "devices": self.devices,
            "memory_bytes": self.memory_bytes,
            "usable_bytes": self.usable_bytes,
            "fits": self.fits,
            "shortfall_bytes": self.shortfall_bytes,
            "layout": self.layout.to_dict(),
            "estimate": self.estimate.to_dict(),
            "summary": self.summary(),
        }


def plan(
    model: ModelShape,
    setup: TrainingSetup,
    accelerator: Accelerator,
    devices: int = 1,
    search: SearchSpace = SearchSpace(),  # noqa: B008 - frozen, never mutated
) -> MemoryPlan:
    """The cheapest layout on up to ``devices`` of ``accelerator`` that fits, or (``fits``
    False) the one that comes closest."""
    if not _is_int(devices) or devices < 1:
        raise ValueError(f"devices: must be an integer >= 1, got {devices!r}")
    best: MemoryPlan | None = None
    for layout in candidate_layouts(model, setup, accelerator, devices, search):
        result = estimate(model, setup, layout, accelerator)
        candidate = MemoryPlan(
            accelerator.name,
            devices,
            accelerator.memory_bytes,
            accelerator.usable_bytes,
            layout,
            result,
            fits=result.peak_bytes <= accelerator.usable_bytes,
        )
        if candidate.fits:
            return candidate
        if best is None or result.peak_bytes < best.estimate.peak_bytes:
            best = candidate
    assert best is not None  # world size 1 without knobs is always a candidate
    return best


def max_context_that_fits(
    model: ModelShape,
    setup: TrainingSetup,
    accelerator: Accelerator,
    devices: int = 1,
    search: SearchSpace = SearchSpace(),  # noqa: B008 - frozen, never mutated
    upper: int = 1 << 25,
) -> int:
    """The longest ``context_length`` (multiple of 1,024, or below 1,024 exact) any layout on
    ``devices`` fits; 0 when not even 2 tokens fit (the weights alone do not)."""

    def fits(length: int) -> bool:
        trial = dataclasses.replace(setup, context_length=length)
        return plan(model, trial, accelerator, devices, search).fits

    if not fits(2):
        return 0
    if fits(upper):
        return upper
    # Whole multiples of 1,024 first: every sequence-parallel degree up to 512 splits them
    # (contract.sequence_parallel_splits), so "fits" is monotonic over them; an arbitrary
    # length may rule a degree out and make a binary search over all lengths jump.
    step, low, high = 1024, 2, upper
    if fits(step):
        low, high = 1, upper // step
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if fits(middle * step) else (low, middle)
        return low * step
    low, high = 2, step
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


@dataclass(frozen=True)
class Capacity:
    """Devices a job may run on: ``devices`` of one accelerator kind."""

    accelerator: Accelerator
    devices: int = 1
    label: str = field(default="")  # where it comes from ("shared pool", "dedicated ...")


def smallest_fitting_capacity(
    model: ModelShape,
    setup: TrainingSetup,
    search: SearchSpace = SearchSpace(),  # noqa: B008 - frozen, never mutated
    max_devices: int = 64,
) -> MemoryPlan | None:
    """Across the GPU catalogue: the plan with the fewest devices (then the smallest device)
    that fits, or None. What a refused job is told would fit."""
    best: MemoryPlan | None = None
    for accelerator in sorted(ACCELERATORS.values(), key=lambda a: a.memory_bytes):
        result = plan(model, setup, accelerator, max_devices, search)
        if result.fits and (best is None or result.layout.world_size < best.layout.world_size):
            best = result
    return best
