"""The names the web tier and the GPU workers share: RoPE methods, LoRA defaults, `TrainConfig`.

Why this module exists: the Django web tier validates fine-tuning requests with the exact
dataclass and option lists the worker trains with, but the web process must never import
torch (slow start, gigabytes of memory, and no GPU there). This is the ONLY gpu_runtime module
the web tier (platform/) may import, and it imports nothing but the standard library --
tests/platform/test_web_process.py enforces both. Everything else in gpu_runtime is free to
pull in the ML stack; `gpu_runtime.rope` re-exports the RoPE names.

`TrainConfig` is every knob of a fine-tuning run in one explicit, JSON-round-trippable
dataclass. Workers receive it through Celery as a plain dict, so `to_dict`/`from_dict` must
round-trip exactly and unknown keys are rejected (a typo in a job spec must fail loudly, not
silently train with a default).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

_D = TypeVar("_D")

# RoPE context extension methods (what each does: gpu_runtime.rope).
RopeMethod = Literal["none", "linear", "yarn", "dynamic", "ntk", "llama3"]
ROPE_METHODS: tuple[str, ...] = ("none", "linear", "yarn", "dynamic", "ntk", "llama3")
# Chosen by benchmarks/context_extension_seeds.py (benchmarks/results/seeds/): the toy passkey
# task at 4x over THREE base models (seeds 0/1/2). After 200 steps at 4L: YaRN 0.98 (1.00/0.98/
# 0.95), static NTK 0.95, dynamic NTK 0.95, linear PI 0.31; before any fine-tuning YaRN already
# reaches 0.89 (NTK 0.53). A single base model once ranked NTK first (0.99 vs 0.94): one seed
# does not decide this — re-run the across-seed script before changing it. On the real model
# (benchmarks/real_model_context.py, SmolLM2-135M 8K -> 16K, bf16) YaRN is among the best
# training-free and, after 3 LoRA steps over seeds pooled, tied with static NTK; dynamic NTK
# retrieved more there but is length-dependent (below: served in chunks it lost the passkey,
# benchmarks/chunked_prefill_rope.py), so it is never the default.
DEFAULT_ROPE_METHOD: RopeMethod = "yarn"
# Methods whose rotary frequencies follow the largest position id of each forward (HF dynamic
# NTK rescales theta by the current length). A prompt the serving engine prefills in chunks
# then has its early keys rotated with other frequencies than its later queries, and prompts
# batched together share the longest one's: served, such a method is not the model that was
# measured with one forward: on the real model a dynamic-NTK fine-tune retrieved the passkey at
# 16K in 3/3 prompts in one forward and 0/3 in 512-token chunks
# (benchmarks/results/chunked_prefill_rope_bfloat16.md). The default never is one
# (tests/gpu_runtime/test_rope_length_dependence.py shows both halves), and a fine-tuning job
# may not ask for one: the API offers JOB_ROPE_METHODS and refuses these with
# ROPE_METHOD_NOT_SERVABLE. gpu_runtime itself still trains and measures them (benchmarks).
LENGTH_DEPENDENT_ROPE_METHODS: frozenset[str] = frozenset({"dynamic"})
JOB_ROPE_METHODS: tuple[str, ...] = tuple(
    m for m in ROPE_METHODS if m not in LENGTH_DEPENDENT_ROPE_METHODS
)
ROPE_METHOD_NOT_SERVABLE = "rope_method_not_servable"


def not_servable_reason(method: str) -> str:
    """Why a job may not train with a length-dependent `method` (the API's refusals say it)."""
    return (
        f"{method!r} RoPE scaling follows each forward's length, and a served model prefills "
        "long prompts in chunks and decodes one token at a time, so the model you would chat "
        "with is not the one trained (a dynamic-NTK fine-tune found the passkey at 16K in one "
        "forward and lost it served in chunks)"
    )


# The one error code for "the prompt plus the completion budget does not fit the model's context".
# The serving engine raises it (ContextSpec.overflow, its one fits check); the replica and the
# gateway pass it through. tests/gpu_runtime/test_context_spec.py keeps it the only spelling.
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"


def strict_from_dict(
    cls: type[_D],
    data: Any,
    *,
    name: str | None = None,
    missing: str = "missing",
    lists_to_tuples: bool = False,
) -> _D:
    """``cls(**data)`` for a dataclass, refusing what a typo would silently get wrong.

    Why one helper: every contract object crosses a JSON boundary (Celery, the job row, a
    config file), and each must refuse a non-object, unknown keys and missing required keys
    with a ValueError naming them (the API turns it into a coded 400), never a TypeError.
    ``name`` spells the object in messages (default: the class name); ``missing`` the word
    before it ("missing required train config field(s): ..."); ``lists_to_tuples`` turns JSON
    lists back into the tuples a frozen dataclass holds."""
    label = name or cls.__name__
    if not isinstance(data, dict):
        raise ValueError(f"{label} must be a JSON object, got {type(data).__name__}")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    unknown = sorted(set(data) - {f.name for f in fields})
    if unknown:
        raise ValueError(f"unknown {label} field(s): {', '.join(map(str, unknown))}")
    absent = sorted(
        f.name
        for f in fields
        if f.name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    )
    if absent:
        raise ValueError(f"{missing} {label} field(s): {', '.join(absent)}")
    if lists_to_tuples:
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**data)


@dataclass(frozen=True)
class ContextSpec:
    """How long a model's context is and how RoPE was stretched to get there.

    Why one object: the length a job asked for, the packed sequence length it trains at, the
    RoPE method and factor written into the saved model config, and the limit serving enforces
    are ONE fact. It is planned once (``ContextSpec.plan`` when a job is created), stored once,
    handed unchanged to ``TrainConfig.context``, written into the saved ``config.json`` under
    ``CONFIG_KEY`` and read back by serving; nothing downstream recomputes the factor.

    ``original_length`` is the base model's native context; ``target_length`` the context trained
    at and served up to; ``rope_factor`` = target / original (never below 1: a shorter target
    needs no scaling).
    """

    original_length: int
    target_length: int
    rope_method: str = DEFAULT_ROPE_METHOD
    rope_factor: float = 1.0

    CONFIG_KEY = "longtune_context"  # key in a saved model's config.json
    # What models saved before the spec existed carry (method/factor/original/context_length);
    # read by `of_model_config` only, never written.
    LEGACY_CONFIG_KEY = "longtune_rope"

    def __post_init__(self) -> None:
        for error in _context_errors(self):
            raise ValueError(error)

    @classmethod
    def plan(
        cls, *, original_length: int, target_length: int, rope_method: str = DEFAULT_ROPE_METHOD
    ) -> ContextSpec:
        """The spec of a run at ``target_length`` from a base of ``original_length``."""
        factor = max(1.0, target_length / original_length) if original_length else 1.0
        return cls(original_length, target_length, rope_method, float(factor))

    @classmethod
    def native(cls, length: int) -> ContextSpec:
        """A model served at its own context, no RoPE scaling (a base model)."""
        return cls(length, length, "none", 1.0)

    @property
    def scaled(self) -> bool:
        return self.rope_method != "none" and self.rope_factor > 1.0

    def overflow(self, prompt_tokens: int, max_tokens: int = 0) -> str | None:
        """None when ``prompt_tokens`` + ``max_tokens`` fit ``target_length``; else the message
        that goes with ``CONTEXT_LENGTH_EXCEEDED``. THE fits-in-context check."""
        if prompt_tokens + max_tokens <= self.target_length:
            return None
        return (
            f"This model's maximum context length is {self.target_length} tokens; the request "
            f"has {prompt_tokens} prompt tokens and asks for up to {max_tokens} completion tokens."
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def of_model_config(cls, config: dict[str, Any]) -> ContextSpec:
        """The spec a saved model's config.json (as a dict) declares.

        ``CONFIG_KEY`` when LongTune wrote it; ``LEGACY_CONFIG_KEY`` (what models saved before
        the spec existed carry) translated once here; otherwise the model is served at its own
        ``max_position_embeddings``. Serving reads the limit through this and nothing else."""
        if config.get(cls.CONFIG_KEY):
            return cls.from_dict(config[cls.CONFIG_KEY])
        legacy = config.get(cls.LEGACY_CONFIG_KEY) or {}
        if legacy.get("original_context_length") and legacy.get("context_length"):
            return cls(
                int(legacy["original_context_length"]),
                int(legacy["context_length"]),
                str(legacy.get("method", "none")),
                float(legacy.get("factor", 1.0)),
            )
        return cls.native(int(config["max_position_embeddings"]))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContextSpec:
        return strict_from_dict(cls, data, name="context spec")


def _context_errors(c: ContextSpec) -> list[str]:
    errors = []
    for name in ("original_length", "target_length"):
        value = getattr(c, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 2:
            errors.append(f"{name}: must be an integer >= 2, got {value!r}")
    if c.rope_method not in ROPE_METHODS:
        errors.append(f"rope_method: must be one of {ROPE_METHODS}, got {c.rope_method!r}")
    if not isinstance(c.rope_factor, int | float) or isinstance(c.rope_factor, bool):
        errors.append(f"rope_factor: must be a number, got {c.rope_factor!r}")
    elif c.rope_factor < 1.0:
        errors.append(f"rope_factor: must be >= 1, got {c.rope_factor!r}")
    return errors


# TrainConfig option lists.
METHODS: tuple[str, ...] = ("lora", "full")
LR_SCHEDULES: tuple[str, ...] = ("cosine", "linear", "constant")
DTYPES: tuple[str, ...] = ("auto", "bfloat16", "float16", "float32")
# Mirrors gpu_runtime.attention.KNOWN_IMPLEMENTATIONS (+ "auto"); kept here so this module stays
# torch-free. tests/gpu_runtime/test_train.py asserts the two lists agree.
ATTENTION_IMPLEMENTATIONS: tuple[str, ...] = (
    "auto",
    "flash_attention_2",
    "longtune_varlen_sdpa",
    "sdpa",
    "eager",
)
# peft's spelling for "every nn.Linear except the output head".
ALL_LINEAR = "all-linear"

# Sequence parallelism (gpu_runtime/sequence_parallel.py): how the ranks of one sequence group
# attend across their slices of a packed row. "auto" resolves by `resolve_sequence_parallel_mode`.
SEQUENCE_PARALLEL_MODES: tuple[str, ...] = ("auto", "ulysses", "ring")
ULYSSES, RING = "ulysses", "ring"


def resolve_sequence_parallel_mode(
    mode: str, degree: int, num_attention_heads: int, num_key_value_heads: int
) -> str:
    """The attention scheme a sequence group of `degree` ranks uses: "ulysses" or "ring".

    The rule (shared with the memory planner, so it lives in this torch-free module):
    Ulysses re-shards q/k/v from sequence to heads with one all-to-all each, so every rank
    sends about (2·Hq + 2·Hkv)·(L/N)·D values per layer, a volume that SHRINKS as N grows; ring
    attention passes each rank's K/V block N−1 times, about 2·Hkv·L·D values per rank, which
    does not. So "auto" picks Ulysses whenever the heads split evenly: `Hq % N == 0` and either
    `Hkv % N == 0` or `N % Hkv == 0` (then each KV head is replicated to N/Hkv ranks). Anything
    else (e.g. 4 query heads over 8 ranks) can only be ring. An explicit "ulysses" that the
    heads do not allow is an error naming the field; an explicit "ring" always works.
    """
    if mode not in SEQUENCE_PARALLEL_MODES:
        raise ValueError(
            f"sequence_parallel_mode: must be one of {SEQUENCE_PARALLEL_MODES}, got {mode!r}"
        )
    if degree <= 1:
        return ULYSSES  # one rank holds the whole row: no communication, any name will do
    heads_split = num_attention_heads % degree == 0 and (
        num_key_value_heads % degree == 0 or degree % num_key_value_heads == 0
    )
    if mode == "auto":
        return ULYSSES if heads_split else RING
    if mode == ULYSSES and not heads_split:
        raise ValueError(
            f"sequence_parallel_mode: 'ulysses' needs the {num_attention_heads} query heads "
            f"(and {num_key_value_heads} KV heads) to split over {degree} ranks; use 'ring' "
            "or 'auto'"
        )
    return mode


def sequence_parallel_splits(length: int, degree: int) -> bool:
    """Can a row of ``length`` tokens be split over a sequence group of ``degree`` ranks?

    Ring attention cuts every row into 2·N zig-zag chunks (load balance under the causal
    mask); asking the same of Ulysses keeps "auto" from turning a valid config invalid. The
    memory planner offers only degrees that pass this, so a plan is always a valid config."""
    return degree <= 1 or length % (2 * degree) == 0


@dataclass
class TrainConfig:
    """One training run. Lengths are in tokens; steps are optimizer steps."""

    base_model: str  # local directory or s3://bucket/prefix (gpu_runtime.registry)
    output_dir: str
    context_length: int  # target context: the RoPE target and the longest packed row
    # Packed row length when shorter than the context (None: rows of context_length). Many
    # short examples packed into few full-context rows give few optimizer steps; shorter rows
    # give more steps for the same tokens (finetuning.planning's "auto" chooses it).
    sequence_length: int | None = None

    method: str = "lora"  # "lora" | "full"
    # The fine-tuned model this run starts from (a final/ or epoch artifact of an earlier run
    # on the same base: local directory or s3://): LoRA loads its adapter and trains it on
    # (its rank/alpha/targets must equal lora_r/lora_alpha/lora_target_modules), full starts
    # from its full weights. None: from the base's own weights. The base stays ``base_model``
    # (tokenizer, frozen weights under an adapter, the artifact's base).
    parent_model: str | None = None
    # LoRA (ignored for method="full")
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: [ALL_LINEAR])
    # LongLoRA's "LoRA+": embeddings and norms are cheap to train and matter at long context.
    lora_train_embeddings_and_norms: bool = False

    # RoPE extension. With `original_context_length` and `rope_factor` given (a job's planned
    # ContextSpec: see `context`), the run uses them verbatim; left None, the spec is planned
    # once from the base model's own config when the model is built (library callers).
    rope_method: str = DEFAULT_ROPE_METHOD
    original_context_length: int | None = None
    rope_factor: float | None = None

    # Optimisation (AdamW)
    learning_rate: float = 2e-4
    lr_schedule: str = "cosine"  # "cosine" | "linear" | "constant", each after linear warmup
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    max_grad_norm: float = 1.0
    num_epochs: int = 1
    max_steps: int | None = None  # when set, overrides num_epochs (epochs repeat as needed)
    micro_batch_size: int = 1  # packed sequences per forward; tokens = context_length × this
    gradient_accumulation_steps: int = 1
    seed: int = 0
    train_on_inputs: bool = False  # False: loss only on assistant/completion tokens

    # Checkpointing / resume
    checkpoint_every_steps: int = 100  # 0 disables periodic checkpoints (stop/final still save)
    keep_checkpoints: int = 2
    # A servable artifact (like final/) under output_dir/epochs/step-<n>/ at the end of every
    # epoch but the last (the last one's is final/): OpenAI's per-epoch model checkpoints.
    epoch_artifacts: bool = False
    # Validation (only when train() is given eval_data): every N steps, and always at the end.
    eval_every_steps: int = 0  # 0: evaluate at the final step only
    resume_from: str | None = None  # a checkpoint dir; None: auto-resume from output_dir
    auto_resume: bool = True

    # Memory / kernels
    attn_implementation: str = "auto"
    activation_checkpointing: bool = True
    offload_activations: bool = False  # torch.autograd.graph.save_on_cpu for saved activations
    loss_chunk_size: int = 1024  # tokens per lm_head chunk; never materialise [tokens × vocab]
    # Sequence-tiled MLP (gpu_runtime/tiling.py): tokens per recomputed MLP slice while training
    # with activation checkpointing; 0 turns it off. Bounds a layer's recompute peak.
    mlp_chunk_size: int = 2048
    dtype: str = "auto"  # "auto": bfloat16 on CUDA, float32 on CPU

    # Sequence parallelism (gpu_runtime/sequence_parallel.py): every packed row is split over
    # this many consecutive ranks (a sequence group), each holding 1/N of its tokens through
    # the whole model; the world is data_parallel × sequence_parallel ranks. 1 = off.
    sequence_parallel: int = 1
    # "ulysses" (all-to-all seq→head sharding), "ring" (K/V blocks around the ring) or "auto"
    # (contract.resolve_sequence_parallel_mode: Ulysses when the heads split evenly).
    sequence_parallel_mode: str = "auto"
    # Data-parallel degree the run was planned with (a job's memory plan): None takes whatever
    # world torchrun gives (world / sequence_parallel data ranks); set, the run refuses any
    # other world, and ``world_size`` says how many processes to launch.
    data_parallel: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [self.lora_target_modules]
        else:
            self.lora_target_modules = list(self.lora_target_modules)
        for error in _validation_errors(self):
            raise ValueError(error)

    # ----------------------------------------------------------------- derived values

    @property
    def row_length(self) -> int:
        """Tokens per packed row: ``sequence_length`` when given, else the context."""
        return self.sequence_length or self.context_length

    @property
    def world_size(self) -> int | None:
        """Processes the planned layout needs (data × sequence), or None when not planned."""
        if self.data_parallel is None:
            return None
        return self.data_parallel * self.sequence_parallel

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.row_length * self.micro_batch_size

    @property
    def context(self) -> ContextSpec | None:
        """The planned spec this run carries, or None when the caller gave only a length."""
        if self.original_context_length is None:
            return None
        return ContextSpec(
            self.original_context_length,
            self.context_length,
            self.rope_method,
            float(self.rope_factor),  # type: ignore[arg-type]  # both or neither: validated
        )

    @classmethod
    def context_fields(cls, spec: ContextSpec) -> dict[str, Any]:
        """The TrainConfig fields that carry ``spec`` (``TrainConfig(**context_fields(s))``)."""
        return {
            "context_length": spec.target_length,
            "rope_method": spec.rope_method,
            "original_context_length": spec.original_length,
            "rope_factor": spec.rope_factor,
        }

    @property
    def checkpoints_dir(self) -> Path:
        return Path(self.output_dir) / "checkpoints"

    # ----------------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (what a Celery task receives)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return strict_from_dict(cls, data, name="train config", missing="missing required")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"train config is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def _validation_errors(c: TrainConfig) -> list[str]:
    """Every problem as 'field: message', first one raised (so the caller can name the field)."""
    errors: list[str] = []

    def check(ok: bool, name: str, message: str) -> None:
        if not ok:
            errors.append(f"{name}: {message}")

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def is_number(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    check(
        isinstance(c.base_model, str) and bool(c.base_model),
        "base_model",
        "must be a non-empty path or s3:// URL",
    )
    check(
        isinstance(c.output_dir, str) and bool(c.output_dir),
        "output_dir",
        "must be a non-empty path",
    )
    check(
        is_int(c.context_length) and c.context_length >= 2,
        "context_length",
        "must be an integer >= 2",
    )
    check(
        c.sequence_length is None
        or (
            is_int(c.sequence_length)
            and is_int(c.context_length)
            and 2 <= c.sequence_length <= c.context_length
        ),
        "sequence_length",
        "must be null or an integer in [2, context_length]",
    )
    check(c.method in METHODS, "method", f"must be one of {METHODS}, got {c.method!r}")
    check(
        c.parent_model is None or (isinstance(c.parent_model, str) and bool(c.parent_model)),
        "parent_model",
        "must be null or a non-empty path or s3:// URL",
    )
    check(is_int(c.lora_r) and c.lora_r >= 1, "lora_r", "must be an integer >= 1")
    check(is_number(c.lora_alpha) and c.lora_alpha > 0, "lora_alpha", "must be > 0")
    check(
        is_number(c.lora_dropout) and 0.0 <= c.lora_dropout < 1.0,
        "lora_dropout",
        "must be in [0, 1)",
    )
    check(
        bool(c.lora_target_modules)
        and all(isinstance(m, str) and m for m in c.lora_target_modules),
        "lora_target_modules",
        f"must be a non-empty list of module names (or [{ALL_LINEAR!r}])",
    )
    check(
        c.rope_method in ROPE_METHODS,
        "rope_method",
        f"must be one of {ROPE_METHODS}, got {c.rope_method!r}",
    )
    if (c.original_context_length is None) != (c.rope_factor is None):
        errors.append(
            "original_context_length: give it together with rope_factor (a planned ContextSpec)"
            " or neither"
        )
    elif c.original_context_length is not None and not errors:
        try:
            c.context  # noqa: B018 - ContextSpec validates itself
        except ValueError as exc:
            errors.append(str(exc))
    check(is_number(c.learning_rate) and c.learning_rate > 0, "learning_rate", "must be > 0")
    check(
        c.lr_schedule in LR_SCHEDULES,
        "lr_schedule",
        f"must be one of {LR_SCHEDULES}, got {c.lr_schedule!r}",
    )
    check(is_int(c.warmup_steps) and c.warmup_steps >= 0, "warmup_steps", "must be an integer >= 0")
    check(is_number(c.weight_decay) and c.weight_decay >= 0, "weight_decay", "must be >= 0")
    check(is_number(c.adam_beta1) and 0 <= c.adam_beta1 < 1, "adam_beta1", "must be in [0, 1)")
    check(is_number(c.adam_beta2) and 0 <= c.adam_beta2 < 1, "adam_beta2", "must be in [0, 1)")
    check(is_number(c.max_grad_norm) and c.max_grad_norm > 0, "max_grad_norm", "must be > 0")
    check(is_int(c.num_epochs) and c.num_epochs >= 1, "num_epochs", "must be an integer >= 1")
    check(
        c.max_steps is None or (is_int(c.max_steps) and c.max_steps >= 1),
        "max_steps",
        "must be null or an integer >= 1",
    )
    check(
        is_int(c.micro_batch_size) and c.micro_batch_size >= 1,
        "micro_batch_size",
        "must be an integer >= 1",
    )
    check(
        is_int(c.gradient_accumulation_steps) and c.gradient_accumulation_steps >= 1,
        "gradient_accumulation_steps",
        "must be an integer >= 1",
    )
    check(is_int(c.seed) and c.seed >= 0, "seed", "must be an integer >= 0")
    check(
        is_int(c.checkpoint_every_steps) and c.checkpoint_every_steps >= 0,
        "checkpoint_every_steps",
        "must be an integer >= 0 (0 disables)",
    )
    check(
        is_int(c.keep_checkpoints) and c.keep_checkpoints >= 1,
        "keep_checkpoints",
        "must be an integer >= 1",
    )
    check(
        is_int(c.eval_every_steps) and c.eval_every_steps >= 0,
        "eval_every_steps",
        "must be an integer >= 0 (0 evaluates at the end only)",
    )
    check(
        c.resume_from is None or (isinstance(c.resume_from, str) and bool(c.resume_from)),
        "resume_from",
        "must be null or a path",
    )
    check(
        c.attn_implementation in ATTENTION_IMPLEMENTATIONS,
        "attn_implementation",
        f"must be one of {ATTENTION_IMPLEMENTATIONS}, got {c.attn_implementation!r}",
    )
    check(
        is_int(c.loss_chunk_size) and c.loss_chunk_size >= 1,
        "loss_chunk_size",
        "must be an integer >= 1",
    )
    check(
        is_int(c.mlp_chunk_size) and c.mlp_chunk_size >= 0,
        "mlp_chunk_size",
        "must be an integer >= 0 (0: no tiling)",
    )
    check(c.dtype in DTYPES, "dtype", f"must be one of {DTYPES}, got {c.dtype!r}")
    check(
        is_int(c.sequence_parallel) and c.sequence_parallel >= 1,
        "sequence_parallel",
        "must be an integer >= 1 (1: off)",
    )
    if is_int(c.sequence_parallel) and c.sequence_parallel > 1:
        for name in ("context_length", "sequence_length"):
            length = getattr(c, name)
            if is_int(length):
                check(
                    sequence_parallel_splits(length, c.sequence_parallel),
                    name,
                    f"must be divisible by 2 × sequence_parallel = {2 * c.sequence_parallel}",
                )
    check(
        c.data_parallel is None or (is_int(c.data_parallel) and c.data_parallel >= 1),
        "data_parallel",
        "must be null (any world) or an integer >= 1",
    )
    check(
        c.sequence_parallel_mode in SEQUENCE_PARALLEL_MODES,
        "sequence_parallel_mode",
        f"must be one of {SEQUENCE_PARALLEL_MODES}, got {c.sequence_parallel_mode!r}",
    )
    for name in (
        "lora_train_embeddings_and_norms",
        "epoch_artifacts",
        "auto_resume",
        "activation_checkpointing",
        "offload_activations",
        "train_on_inputs",
    ):
        check(isinstance(getattr(c, name), bool), name, "must be true or false")
    return errors
