"""The native serving engine: one scheduler thread, continuous batching, chunked prefill.

Each iteration of the scheduler loop (`_step`):
  1. admit queued requests (up to `max_batch_size` active): pin their adapter in the LRU
     pool (loading it, or a base instance for a new RoPE group), check the context length;
  2. prefill: run at most `prefill_chunk_size` prompt tokens (handed out FIFO) into each
     request's own KV cache — a 16K prompt is 32 chunks of 512 that each attend
     [512, cached + 512], never an [L, L] mask, and other requests keep decoding between its
     chunks; the last chunk's logits give the first token (TTFT). First chunks of several
     prompts on one instance and adapter are PACKED into one forward (one row, positions
     restarting at 0 per prompt; varlen/flash attention keeps them apart) and the packed
     cache is cut into per-request caches; a chunk that continues a cache runs alone;
  3. decode: for every RoPE group (base instance), one batched forward of the newest token of
     all its running requests over a left-padded batched cache (kv_cache.py), then per-request
     sampling, stop checks and streaming.
Requests for different adapters of one group share that forward: each row names its adapter
(gathered LoRA, gathered.py via `ModelInstance.forward_rows`), so the base weights are read
once per step however many adapters are in flight, and the LoRA deltas of all rows are two
batched matmuls per layer. Only adapters that cannot be gathered (see adapters.py:
DoRA, modules_to_save such as LongLoRA's trained embeddings/norms, ...) get a batch and a
forward of their own. A request joins or leaves a batch between steps.

Only the scheduler thread touches models and caches; `submit` / `cancel` only enqueue under a
lock, which is what makes the public API thread-safe.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from gpu_runtime.registry import load_model, load_tokenizer, resolve_model_dir
from gpu_runtime.rope import ContextSpec
from gpu_runtime.serving.adapters import (
    DEFAULT_MAX_ADAPTER_BYTES,
    AdapterPool,
    InstanceSpec,
    ModelInstance,
    resolve_adapter_dir,
    saved_context,
)
from gpu_runtime.serving.gathered import DEFAULT_MAX_PLAN_CACHE_BYTES
from gpu_runtime.serving.handle import RequestHandle
from gpu_runtime.serving.kv_cache import (
    BatchedCache,
    split_packed_cache,
    stack_caches,
    unstack_cache,
)
from gpu_runtime.serving.sampling import sample_next_token
from gpu_runtime.serving.sequence import Sequence
from gpu_runtime.serving.types import (
    ContextLengthError,
    EngineClosedError,
    GenerationRequest,
    GenerationResult,
    InvalidRequestError,
    RequestFailedError,
    ServingError,
    UnknownAdapterError,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    """How to load the base and how hard to batch.

    rope_method / target_context: the scaling the *base* is served with (registry.load_model);
    adapters trained with other scaling get their own instance (see adapters.py).
    """

    base_model: str  # local directory or s3:// prefix (registry)
    rope_method: str | None = None
    target_context: int | None = None
    dtype: torch.dtype | None = None
    attn_implementation: str = "auto"
    device: str = "auto"  # "auto": cuda when available, else cpu
    max_loaded_adapters: int = 8  # resident adapters, all groups (gathered + peft)
    # Bound of each RoPE group's gathered LoRA buffers (pages of every rank, all modules).
    max_adapter_bytes: int = DEFAULT_MAX_ADAPTER_BYTES
    # Bound of the gathered weight copies each group's cached decode plans keep (a batch's
    # adapters gathered once per membership instead of every step; gathered.GatherPlan).
    max_plan_cache_bytes: int = DEFAULT_MAX_PLAN_CACHE_BYTES
    max_batch_size: int = 16  # requests prefilling or decoding at once; the rest wait
    prefill_chunk_size: int = 512  # prompt tokens per scheduler step

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass
class EngineStats:
    """Counters for benchmarks and tests (read them after requests finished).

    decode_forwards / decode_steps is the number of decode forwards per scheduler step: 1
    while every running request is in one RoPE group and all adapters can be mixed.
    max_decode_adapters counts the base as one "adapter". prefill_forwards < prefill_chunks
    means prompts were packed: several first chunks prefilled in one forward."""

    decode_steps: int = 0  # scheduler steps that decoded
    decode_forwards: int = 0  # decode forwards (one per batch per step)
    max_decode_batch: int = 0  # most rows in one decode forward
    max_decode_adapters: int = 0  # most distinct adapters in one decode forward
    prefill_chunks: int = 0  # prompt chunks prefilled (a packed forward holds several)
    prefill_forwards: int = 0  # prefill forwards that completed (packed or alone)
    max_prefill_pack: int = 0  # most prompt chunks in one prefill forward
    finished: int = 0


# Decode batch key: (instance, None) for a RoPE group's shared mixed-adapter batch, and
# (instance, adapter) for an adapter that cannot be gathered (peft), in a forward of its own. The
# instance object, not its signature: a group dropped and loaded again in one step (LRU) is a
# new instance, and its requests must not join the old one's batch that is still retiring.
_BatchKey = tuple[ModelInstance, str | None]


@dataclass(eq=False)
class _DecodeBatch:
    instance: ModelInstance
    seqs: list[Sequence] = field(default_factory=list)
    cache: BatchedCache | None = None


class InferenceEngine:
    """Thread-safe engine: `submit(request) -> RequestHandle`, `generate(request) -> result`."""

    def __init__(
        self,
        config: EngineConfig,
        *,
        model: torch.nn.Module | None = None,
        tokenizer=None,
        autostart: bool = True,
    ) -> None:
        self.config = config
        device = config.resolved_device()
        if model is None:
            model = load_model(
                config.base_model,
                dtype=config.dtype,
                attn_implementation=config.attn_implementation,
                rope_method=config.rope_method,
                target_context=config.target_context,
            )
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config.base_model)
        spec = InstanceSpec(
            resolve_model_dir(config.base_model),
            model.config,
            config.dtype,
            config.attn_implementation,
            device,
        )
        self._lock = threading.Condition()
        self.pool = AdapterPool(
            ModelInstance(
                spec,
                model,
                max_adapter_bytes=config.max_adapter_bytes,
                max_plan_cache_bytes=config.max_plan_cache_bytes,
            ),
            max_loaded=config.max_loaded_adapters,
            max_adapter_bytes=config.max_adapter_bytes,
            max_plan_cache_bytes=config.max_plan_cache_bytes,
            on_ready=self._wake,
        )
        self.stats = EngineStats()
        self._default_stop_ids = _eos_ids(model, self.tokenizer)

        self._adapters: dict[str, str] = {}  # name -> location
        self._incoming: deque[Sequence] = deque()
        self._cancelled: set[str] = set()
        self._live_ids: set[str] = set()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._autostart = autostart
        # Scheduler-thread state.
        self._waiting: list[Sequence] = []
        self._prefilling: list[Sequence] = []
        self._batches: dict[_BatchKey, _DecodeBatch] = {}
        self._joining: list[Sequence] = []
        self._background_loads = False

    # ------------------------------------------------------------------ public API
    @property
    def max_context(self) -> int:
        """Context of the default (base) group."""
        return self.pool.default.max_context

    def context(self, adapter: str | None = None) -> ContextSpec:
        """The context `adapter` (None: the base) is served at: the spec its saved config
        records, the same one the instance serving it is loaded with (one source)."""
        if adapter is None:
            return self.pool.default.context
        with self._lock:
            location = self._adapters.get(adapter)
        if location is None:
            raise UnknownAdapterError(f"unknown adapter {adapter!r}", field="adapter")
        return saved_context(resolve_adapter_dir(location)) or self.pool.default.context

    def register_adapter(self, name: str, location: str) -> None:
        """Make `name` servable; it is loaded on first use (local dir or s3:// prefix)."""
        if not name or not isinstance(name, str):
            raise InvalidRequestError("adapter name must be a non-empty string", field="adapter")
        with self._lock:
            self._adapters[name] = location

    def unregister_adapter(self, name: str) -> None:
        """Stop accepting requests for `name` (its endpoint stopped). Requests already
        admitted finish; the weights leave memory when the LRU next needs the slot."""
        with self._lock:
            self._adapters.pop(name, None)

    def submit(self, request: GenerationRequest) -> RequestHandle:
        """Validate and enqueue; returns at once. Raises InvalidRequestError subclasses."""
        request.sampling.validate()
        if request.adapter is not None and request.adapter not in self._adapters:
            raise UnknownAdapterError(f"unknown adapter {request.adapter!r}", field="adapter")
        prompt_ids = self._prompt_ids(request)
        if request.adapter is None:  # other groups' contexts are known once their adapter loads
            _check_context(len(prompt_ids), request.sampling.max_tokens, self.pool.default)
        handle = RequestHandle(request.request_id, self._cancel)
        stop_ids = request.sampling.stop_token_ids
        seq = Sequence(
            request=request,
            handle=handle,
            prompt_ids=prompt_ids,
            stop_token_ids=frozenset(self._default_stop_ids if stop_ids is None else stop_ids),
            tokenizer=self.tokenizer,
        )
        with self._lock:
            if self._closed:
                raise EngineClosedError("the engine is shut down")
            if request.request_id in self._live_ids:
                raise InvalidRequestError(
                    f"request id {request.request_id!r} is already running",
                    code="duplicate_request_id",
                    field="request_id",
                )
            self._live_ids.add(request.request_id)
            self._incoming.append(seq)
            self._lock.notify_all()
        if self._autostart:
            self.start()
        return handle

    def generate(
        self, request: GenerationRequest, timeout: float | None = None
    ) -> GenerationResult:
        return self.submit(request).result(timeout)

    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="longtune-serving-scheduler", daemon=True
                )
                self._thread.start()

    def shutdown(self, timeout: float | None = 30.0) -> None:
        """Stop accepting requests, cancel those still running, unload the adapters (the base
        model object passed in is left without LoRA layers) and join the scheduler thread."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        else:
            self._cancel_everything()

    def __enter__(self) -> InferenceEngine:
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ submission helpers
    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        if (request.prompt is None) == (request.prompt_token_ids is None):
            raise InvalidRequestError(
                "give exactly one of prompt and prompt_token_ids",
                code="invalid_prompt",
                field="prompt",
            )
        if request.prompt is not None:
            ids = self.tokenizer(request.prompt).input_ids
        else:
            ids = list(request.prompt_token_ids)
            vocab = self.pool.default.base.config.vocab_size
            if any(not isinstance(t, int) or not 0 <= t < vocab for t in ids):
                raise InvalidRequestError(
                    f"prompt_token_ids must be ints in [0, {vocab})",
                    code="invalid_prompt",
                    field="prompt_token_ids",
                )
        if not ids:
            raise InvalidRequestError("the prompt is empty", code="invalid_prompt", field="prompt")
        return ids

    def _wake(self) -> None:
        """An adapter finished loading in the background: let the scheduler admit its requests."""
        with self._lock:
            self._lock.notify_all()

    def _cancel(self, request_id: str) -> None:
        with self._lock:
            if request_id in self._live_ids:
                self._cancelled.add(request_id)
                self._lock.notify_all()

    # ------------------------------------------------------------------ scheduler loop
    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._lock:
                    while not self._closed and not self._has_work():
                        self._lock.wait()
                    if self._closed:
                        break
                self._step()
                if self._active_count() == 0 and self._waiting and self.pool.loading:
                    with self._lock:  # only cold adapters' requests left: sleep until loaded
                        if not self._incoming and not self._cancelled and not self._closed:
                            self._lock.wait(0.05)
        self._cancel_everything()

    def _has_work(self) -> bool:  # caller holds the lock
        return bool(
            self._incoming
            or self._cancelled
            or self._prefilling
            or self._joining
            or any(b.seqs for b in self._batches.values())
            or self._waiting
        )

    def _step(self) -> None:
        with self._lock:
            self._waiting.extend(self._incoming)
            self._incoming.clear()
            cancelled, self._cancelled = self._cancelled, set()
        if cancelled:
            self._apply_cancellations(cancelled)
        self._admit()
        self._prefill()
        self._decode()

    def _active_count(self) -> int:
        return (
            len(self._prefilling)
            + len(self._joining)
            + sum(len(b.seqs) for b in self._batches.values())
        )

    # ------------------------------------------------------------------ admission
    def _admit(self) -> None:
        # While requests run, a cold adapter is read on the loader thread (they keep going);
        # with nothing running there is nothing to keep going, so it is read right here.
        self._background_loads = self._active_count() > 0
        still_waiting = []
        for seq in self._waiting:
            if self._active_count() >= self.config.max_batch_size:
                still_waiting.append(seq)
                continue
            try:
                instance = self._acquire_instance(seq)
            except ServingError as error:
                self._fail([seq], error)
                continue
            except Exception as error:  # adapter files unreadable, base reload failed, ...
                logger.exception("could not load adapter %s", seq.adapter)
                self._fail([seq], RequestFailedError(f"could not load adapter: {error}"))
                continue
            if instance is None:  # every resident adapter is in use: retry next step
                still_waiting.append(seq)
                continue
            seq.instance = instance
            seq.admit(instance.max_context)
            self._prefilling.append(seq)
        self._waiting = still_waiting

    def _acquire_instance(self, seq: Sequence) -> ModelInstance | None:
        if seq.adapter is None:
            return self.pool.default
        with self._lock:
            location = self._adapters.get(seq.adapter)
        if location is None:
            raise UnknownAdapterError(f"unknown adapter {seq.adapter!r}", field="adapter")
        instance = self.pool.acquire(seq.adapter, location, background=self._background_loads)
        if instance is not None:
            try:
                _check_context(len(seq.prompt_ids), seq.request.sampling.max_tokens, instance)
            except ContextLengthError:
                self.pool.release(seq.adapter)
                raise
        return instance

    # ------------------------------------------------------------------ prefill
    def _prefill(self) -> None:
        """Run this step's `prefill_chunk_size` prompt tokens, packed where possible.

        The budget is handed out FIFO (`_plan_prefill`); the planned chunks then run in as few
        forwards as is exact: first chunks (no cache yet) of one instance and adapter share a
        packed forward where the instance supports it (`ModelInstance.can_pack_prefill`),
        while a chunk that continues a cache, or any chunk of an instance that cannot pack,
        runs alone. Prompts whose last chunk ran leave for decoding (or retire)."""
        plan = self._plan_prefill()
        groups: dict[object, list[tuple[Sequence, int]]] = {}
        for seq, end in plan:
            instance: ModelInstance = seq.instance
            packable = seq.prefilled == 0 and instance.can_pack_prefill
            key = self._batch_key(seq) if packable else seq
            groups.setdefault(key, []).append((seq, end))
        for chunks in groups.values():
            if len(chunks) == 1:
                self._prefill_alone(*chunks[0])
            else:
                self._prefill_packed(chunks)
        for seq, _ in plan:
            if seq.prefill_done and seq in self._prefilling:  # a failed one has left already
                self._prefilling.remove(seq)
                if seq.finish_reason is not None:
                    self._retire(seq)
                else:
                    self._joining.append(seq)

    def _plan_prefill(self) -> list[tuple[Sequence, int]]:
        """(sequence, prompt end of its chunk) for this step, FIFO until the budget is spent.

        At most the last planned chunk stops short of its prompt's end, so only the head of
        the queue can ever continue a cache; a long prompt's first chunk may take whatever
        budget the short prompts before it left."""
        budget = self.config.prefill_chunk_size
        plan = []
        for seq in self._prefilling:
            if budget <= 0:
                break
            end = min(len(seq.prompt_ids), seq.prefilled + budget)
            plan.append((seq, end))
            budget -= end - seq.prefilled
        return plan

    def _prefill_alone(self, seq: Sequence, end: int) -> None:
        """One chunk in a forward of its own; a failure fails this request only."""
        try:
            self._prefill_chunk(seq, end)
        except Exception as error:
            logger.exception("prefill failed for %s", seq.request_id)
            self._prefilling.remove(seq)
            self._fail([seq], RequestFailedError(f"prefill failed: {error}"))

    def _prefill_chunk(self, seq: Sequence, end: int) -> None:
        """Feed prompt tokens [prefilled, end) into seq.cache; sample the first token at the end."""
        instance: ModelInstance = seq.instance
        device = instance.spec.device
        start = seq.prefilled
        input_ids = torch.tensor([seq.prompt_ids[start:end]], device=device)  # [1, n]
        position_ids = torch.arange(start, end, device=device)[None]  # [1, n]
        if seq.cache is None:
            seq.cache = DynamicCache(config=instance.base.config)
        logits = instance.forward_rows(
            [seq.adapter],
            input_ids=input_ids,
            position_ids=position_ids,
            past_key_values=seq.cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits  # [1, 1, V]
        self._count_prefill_forward(1)
        self._finish_chunk(seq, end, logits[0, -1])

    def _prefill_packed(self, chunks: list[tuple[Sequence, int]]) -> None:
        """The first chunks of several prompts (one instance, one adapter) in ONE forward.

        The chunks are concatenated into one row whose position ids restart at 0 for every
        prompt, which the packing attention implementations (see `supports_packed_prefill`)
        read as document starts: no prompt attends another, so each one's cache span and
        last-token logits are what prefilling it alone gives. If the packed forward fails the
        chunks are retried one by one, so a failure still fails only the request that causes it.
        """
        chunks = sorted(chunks, key=lambda chunk: _by_adapter(chunk[0]))  # see _by_adapter
        try:
            caches, logits = self._packed_forward(chunks)
        except Exception:
            logger.exception(
                "packed prefill of %s failed; prefilling them one by one",
                [seq.request_id for seq, _ in chunks],
            )
            for seq, end in chunks:
                self._prefill_alone(seq, end)
            return
        self._count_prefill_forward(len(chunks))
        row = 0  # logits rows exist for the prompts this chunk completes, in pack order
        for (seq, end), cache in zip(chunks, caches, strict=True):
            seq.cache = cache
            last = None
            if end == len(seq.prompt_ids):
                last, row = logits[0, row], row + 1
            try:
                self._finish_chunk(seq, end, last)
            except Exception as error:
                logger.exception("prefill failed for %s", seq.request_id)
                self._prefilling.remove(seq)
                self._fail([seq], RequestFailedError(f"prefill failed: {error}"))

    def _packed_forward(
        self, chunks: list[tuple[Sequence, int]]
    ) -> tuple[list[DynamicCache], torch.Tensor]:
        """Run the packed row; returns one cache per chunk and the logits [1, K, V] of the K
        chunks that end their prompt (pack order)."""
        first: Sequence = chunks[0][0]
        instance: ModelInstance = first.instance
        device = instance.spec.device
        lengths = [end for _, end in chunks]  # first chunks: prompt tokens [0, end)
        tokens = [t for seq, end in chunks for t in seq.prompt_ids[:end]]
        input_ids = torch.tensor([tokens], device=device)  # [1, T]
        position_ids = torch.cat([torch.arange(n, device=device) for n in lengths])[None]
        spans_end = itertools.accumulate(lengths)  # one past each chunk's span in the row
        last_rows = [
            stop - 1
            for (seq, end), stop in zip(chunks, spans_end, strict=True)
            if end == len(seq.prompt_ids)
        ]
        # transformers slices the hidden states at a 1-D index tensor before lm_head. With no
        # prompt completing (impossible for 2+ chunks, see _plan_prefill) keep just the last.
        keep = torch.tensor(last_rows, device=device) if last_rows else 1
        packed = DynamicCache(config=instance.base.config)
        logits = instance.forward_packed(
            [seq.adapter for seq, _ in chunks],  # prompt k's span runs its own adapter
            lengths,
            input_ids=input_ids,
            position_ids=position_ids,
            past_key_values=packed,
            use_cache=True,
            logits_to_keep=keep,
        ).logits  # [1, K, V]
        return split_packed_cache(packed, lengths), logits

    def _count_prefill_forward(self, sequences: int) -> None:
        stats = self.stats
        stats.prefill_forwards += 1
        stats.prefill_chunks += sequences
        stats.max_prefill_pack = max(stats.max_prefill_pack, sequences)

    def _finish_chunk(self, seq: Sequence, end: int, last_logits: torch.Tensor | None) -> None:
        """Record a chunk fed into seq.cache; after the prompt's last one, sample the first
        token from the last prompt token's logits (this sets the request's TTFT)."""
        seq.prefilled = end
        seq.prefill_chunks += 1
        if seq.prefill_done:
            assert seq.generator is not None and last_logits is not None
            seq.append_token(sample_next_token(last_logits, seq.request.sampling, seq.generator))

    # ------------------------------------------------------------------ decode
    def _decode(self) -> None:
        self._regroup()
        for key in [k for k, b in self._batches.items() if not b.seqs]:
            del self._batches[key]
        if self._batches:  # counted first: the last forward may finish the caller's request
            self.stats.decode_steps += 1
        for key, batch in list(self._batches.items()):
            try:
                self._decode_batch(batch)
            except Exception as error:
                logger.exception("decode failed for group %s, %s", key[0].signature, key[1])
                self._fail(batch.seqs, RequestFailedError(f"decode failed: {error}"))
                del self._batches[key]

    @staticmethod
    def _batch_key(seq: Sequence) -> _BatchKey:
        instance: ModelInstance = seq.instance
        return (instance, None if instance.can_mix(seq.adapter) else seq.adapter)

    def _regroup(self) -> None:
        """Drop finished requests from their batches and add newly prefilled ones.

        A batch whose membership changed is unstacked to per-request caches and restacked;
        an unchanged batch keeps its batched cache (the common case: no copying)."""
        joining: dict[_BatchKey, list[Sequence]] = {}
        for seq in self._joining:
            key = self._batch_key(seq)
            joining.setdefault(key, []).append(seq)
            if key not in self._batches:
                self._batches[key] = _DecodeBatch(seq.instance)
        self._joining = []
        for key, batch in self._batches.items():
            staying = [s for s in batch.seqs if s.finish_reason is None]
            new = joining.get(key, [])
            if len(staying) == len(batch.seqs) and not new:
                continue
            if batch.cache is not None:
                for seq, cache in zip(batch.seqs, unstack_cache(batch.cache), strict=True):
                    seq.cache = cache
            for seq in batch.seqs:
                if seq.finish_reason is not None:
                    seq.cache = None
            batch.seqs = sorted(staying + new, key=_by_adapter)  # see _by_adapter
            batch.cache = stack_caches([s.cache for s in batch.seqs]) if batch.seqs else None
            for seq in batch.seqs:
                seq.cache = None  # the batch owns the rows now

    def _decode_batch(self, batch: _DecodeBatch) -> None:
        assert batch.cache is not None
        device = batch.instance.spec.device
        seqs = batch.seqs
        input_ids = torch.tensor([[s.generated[-1]] for s in seqs], device=device)  # [B, 1]
        position_ids = torch.tensor([[s.num_cached] for s in seqs], device=device)  # [B, 1]
        attention_mask = batch.cache.extend_mask()  # [B, T + 1]
        adapters = [s.adapter for s in seqs]  # row i decodes with adapters[i]
        logits = batch.instance.forward_rows(
            adapters,
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=batch.cache.cache,
            use_cache=True,
        ).logits[:, -1, :]  # [B, V]
        stats = self.stats
        stats.decode_forwards += 1
        stats.max_decode_batch = max(stats.max_decode_batch, len(seqs))
        stats.max_decode_adapters = max(stats.max_decode_adapters, len(set(adapters)))
        for row, seq in enumerate(seqs):
            assert seq.generator is not None
            seq.append_token(sample_next_token(logits[row], seq.request.sampling, seq.generator))
            if seq.finish_reason is not None:
                self._retire(seq)

    # ------------------------------------------------------------------ endings
    def _all_active(self) -> Iterable[Sequence]:
        yield from self._waiting
        yield from self._prefilling
        yield from self._joining
        for batch in self._batches.values():
            yield from (s for s in batch.seqs if s.finish_reason is None)

    def _apply_cancellations(self, request_ids: set[str]) -> None:
        for seq in [s for s in self._all_active() if s.request_id in request_ids]:
            self._remove_pending(seq)
            seq.finish("cancelled")
            self._release(seq)
        with self._lock:  # cancelled before the scheduler ever saw them
            pending = [s for s in self._incoming if s.request_id in request_ids]
        for seq in pending:
            with self._lock:
                self._incoming.remove(seq)
            seq.finish("cancelled")
            self._release(seq)

    def _remove_pending(self, seq: Sequence) -> None:
        """Take seq out of the pre-decode queues (batched seqs leave at the next regroup)."""
        for queue in (self._waiting, self._prefilling, self._joining):
            if seq in queue:
                queue.remove(seq)
                seq.cache = None

    def _retire(self, seq: Sequence) -> None:
        seq.finish()
        self.stats.finished += 1
        self._release(seq)

    def _fail(self, seqs: list[Sequence], error: ServingError) -> None:
        for seq in seqs:
            if seq.finish_reason is None:
                seq.finish_reason = "error"
            seq.cache = None
            seq.handle._fail(error)
            self._release(seq)

    def _release(self, seq: Sequence) -> None:
        """Unpin the adapter (once) and forget the request id."""
        if seq.instance is not None and seq.adapter is not None:
            self.pool.release(seq.adapter)
            seq.instance = None
        with self._lock:
            self._live_ids.discard(seq.request_id)

    def _cancel_everything(self) -> None:
        with self._lock:
            self._waiting.extend(self._incoming)
            self._incoming.clear()
        for seq in list(self._all_active()):
            self._remove_pending(seq)
            seq.finish("cancelled")
            self._release(seq)
        self._batches.clear()
        # WHY inference_mode: adapters loaded by the scheduler hold inference tensors, and
        # peft's delete_adapter re-activates a remaining adapter (requires_grad_(True) on its
        # weights), which torch refuses outside inference mode — the base would keep its LoRA.
        with torch.inference_mode():
            self.pool.unload_all()


def _by_adapter(seq: Sequence) -> tuple[bool, str]:
    """Sort key of a decode batch's rows and a packed row's prompts: the base first, then
    adapter by adapter (stable). WHY: each adapter's rows are then one contiguous run, so the
    gathered delta of equal-sized runs is a view of the batch (gathered.GatherPlan: no per-module
    gather of inputs or scatter of outputs); a row's own result does not depend on its place."""
    return (seq.adapter is not None, seq.adapter or "")


def _check_context(prompt_tokens: int, max_tokens: int, instance: ModelInstance) -> None:
    """THE fits-in-context check of a request (ContextSpec.overflow against the spec of the
    instance that serves it). It runs here, once per request, because only here are both the
    prompt's token count and the served model's saved spec known: for the base at submit,
    for an adapter once its group instance is acquired. The worker and the gateway pass the
    coded 400 through instead of checking again."""
    spec = instance.context
    message = spec.overflow(prompt_tokens, max_tokens)
    if message is not None:
        raise ContextLengthError(
            message, field="max_tokens" if prompt_tokens < spec.target_length else "prompt"
        )


def _eos_ids(model: torch.nn.Module, tokenizer) -> set[int]:
    """What model.generate stops on: generation_config eos (int or list) and the tokenizer's."""
    ids: set[int] = set()
    generation_config = getattr(model, "generation_config", None)
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    ids.update([eos] if isinstance(eos, int) else list(eos or []))
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
