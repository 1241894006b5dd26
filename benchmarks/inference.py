"""Inference serving: LongTune's engine vs plain `model.generate`, same model, same run.

WHY: the serving engine adds a scheduler, chunked prefill and a batched left-padded KV cache
on top of transformers. This checks that it costs nothing where one request is alone (TTFT
at long prompts, single-stream decode speed) and pays off under load (aggregate tokens/s
with 8 concurrent requests).

Model: a random-weight Llama (4 layers, hidden 256, GQA 4/2 heads) "pre-trained" at 4K and
served with YaRN at 32K, so the 16K prompt is inside the extended context. Both arms run on
the very same model object, with LongTune's attention (attn "auto").

Measured:
  1. TTFT and decode tokens/s at 2K / 8K / 16K-token prompts: engine (metrics it records
     per request) vs model.generate (first-token and last-token times from a streamer).
  2. Aggregate throughput: 8 requests (256-token prompts, 64 new tokens) served sequentially
     by model.generate, sequentially by the engine, and concurrently by the engine.
  3. Multi-LoRA: the same kind of 8 requests spread over 4 random LoRA adapters (rank 8, all
     linear layers), sent to the engine one at a time vs all at once. Concurrent requests on
     different adapters share one decode forward (gathered LoRA, gpu_runtime/serving/gathered.py);
     the ratio says what that batching buys when every request wants its own adapter.
  4. Mixed-adapter batches: 8 / 32 / 64 concurrent requests round-robin over 1 / 4 / 16 / 64
     adapters vs the single-model batch (no adapter) of the same size, each best of
     `mix_repeats` interleaved rounds (the machine is shared: the best run is the least
     disturbed one); and the swap-in latency of cold adapters requested while a batch decodes.
  5. Profile of one 32-row decode forward with 0 / 1 / 16 adapters: best wall and CPU time,
     aten ops per forward and the ops the gathered delta adds, next to the recorded profile
     of the engine before issue 17's second pass (`--profile-only JSON` records one).
Targets: concurrency-8 throughput ≥ 2× sequential generate; engine TTFT ≤ generate TTFT
(within 10% timing noise on shared cores); 16 distinct adapters ≥ 0.8× the single-model batch
of the same size, at every size.

Run:  python benchmarks/inference.py           (~1.5 min on 2 idle CPU cores)
      python benchmarks/inference.py --threads 1 --mix-repeats 3   (a shared, loaded box)
      python benchmarks/inference.py --quick   (seconds; smoke-test sizes)
"""

from __future__ import annotations

import argparse
import json
import os
import platform as _platform
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # allow `python benchmarks/inference.py`
    sys.path.insert(0, str(REPO_ROOT))

from gpu_runtime.registry import load_model, load_tokenizer  # noqa: E402
from gpu_runtime.serving import (  # noqa: E402
    EngineConfig,
    GenerationRequest,
    InferenceEngine,
    SamplingParams,
)
from gpu_runtime.tiny import build_tiny_model_dir  # noqa: E402

DEFAULT_RESULTS = REPO_ROOT / "benchmarks" / "results" / "inference.md"
DEFAULT_CACHE = REPO_ROOT / "var" / "bench-cache"
# The decode-forward profile of the engine before issue 17's second pass (see the report).
PROFILE_BEFORE = REPO_ROOT / "benchmarks" / "results" / "inference_profile_before.json"
TTFT_TOLERANCE = 1.10  # engine TTFT may be at most 10% above generate's (timing noise)
THROUGHPUT_TARGET = 2.0
MIX_TARGET = 0.8  # 16 distinct adapters vs the single-model batch of the same size
MIX_TARGET_ADAPTERS = 16
LINEAR_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class BenchConfig:
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 688
    original_context: int = 4096
    served_context: int = 32768
    prompt_lengths: tuple[int, ...] = (2048, 8192, 16384)
    decode_tokens: int = 32
    prefill_chunk_size: int = 2048
    concurrency: int = 8
    throughput_prompt: int = 256
    throughput_new_tokens: int = 64
    lora_adapters: int = 4  # the `concurrency` requests are spread over this many adapters
    lora_rank: int = 8
    mix_concurrency: tuple[int, ...] = (8, 32, 64)
    mix_adapters: tuple[int, ...] = (1, 4, 16, 64)
    mix_prompt: int = 32
    mix_new_tokens: int = 16
    mix_repeats: int = 5  # 2 left idle 2-core runs' 16-adapter ratios anywhere in 0.75-1.09
    swap_ins: int = 4  # cold adapters requested while a batch decodes
    profile_concurrency: int = 32  # rows of the profiled decode forward
    profile_repeats: int = 30


def quick_config() -> BenchConfig:
    return replace(
        BenchConfig(),
        hidden_size=64,
        num_layers=2,
        intermediate_size=128,
        original_context=128,
        served_context=1024,
        prompt_lengths=(128, 512),
        decode_tokens=8,
        prefill_chunk_size=128,
        concurrency=4,
        throughput_prompt=32,
        throughput_new_tokens=8,
        lora_adapters=2,
        mix_concurrency=(4,),
        mix_adapters=(1, 2),
        mix_prompt=16,
        mix_new_tokens=4,
        mix_repeats=1,
        swap_ins=1,
        profile_concurrency=4,
        profile_repeats=2,
    )


# --------------------------------------------------------------------------- setup
def ensure_model(config: BenchConfig, cache_root: Path) -> Path:
    name = (
        f"infer-h{config.hidden_size}-l{config.num_layers}-i{config.intermediate_size}"
        f"-c{config.original_context}"
    )
    path = cache_root / name
    if not (path / "model.safetensors").is_file():
        build_tiny_model_dir(
            path,
            seed=0,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            num_kv_heads=config.num_kv_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=config.original_context,
        )
    return path


def ensure_adapters(
    config: BenchConfig, model_dir: Path, cache_root: Path, count: int
) -> list[Path]:
    """`count` random LoRA adapters for the cached model (built once, next to it).

    Written directly as peft's files (adapter_config.json + adapter_model.safetensors, the
    same keys and shapes peft saves for `target_modules` = every linear layer but lm_head):
    64 get_peft_model round trips would dominate a cold run. lora_A is peft's default
    (kaiming-uniform), lora_B random (seeded) rather than peft's zeros so every adapter
    changes the outputs. No config.json: they are served on the engine's base (one group)."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    shapes = None
    paths = []
    for index in range(count):
        path = cache_root / f"{model_dir.name}-gathered{index}-r{config.lora_rank}"
        paths.append(path)
        if (path / "adapter_model.safetensors").is_file():
            continue
        if shapes is None:
            model = load_model(str(model_dir))
            shapes = {
                name: (m.in_features, m.out_features)
                for name, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in LINEAR_TARGETS
            }
        generator = torch.Generator().manual_seed(100 + index)
        rank, tensors = config.lora_rank, {}
        for name, (d_in, d_out) in shapes.items():
            bound = 1 / d_in**0.5
            a = (torch.rand(rank, d_in, generator=generator) * 2 - 1) * bound
            tensors[f"base_model.model.{name}.lora_A.weight"] = a
            b = torch.randn(d_out, rank, generator=generator) * 0.02
            tensors[f"base_model.model.{name}.lora_B.weight"] = b
        path.mkdir(parents=True, exist_ok=True)
        LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            lora_dropout=0.0,
            target_modules=list(LINEAR_TARGETS),
            base_model_name_or_path=str(model_dir),
        ).save_pretrained(path)
        save_file(tensors, path / "adapter_model.safetensors")
    return paths


def prompt_ids(length: int, vocab_size: int, seed: int) -> list[int]:
    """Random ordinary tokens (ids above the 6 special tokens), deterministic per seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(6, vocab_size, (length,), generator=generator).tolist()


class _TimingStreamer:
    """transformers streamer that timestamps the prompt and every generated token."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def generate_once(model, ids: list[int], new_tokens: int, pad_id: int) -> dict[str, float]:
    """model.generate greedy; TTFT and decode rate from the streamer's timestamps."""
    streamer = _TimingStreamer()
    inputs = torch.tensor([ids])
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            inputs,
            attention_mask=torch.ones_like(inputs),
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=pad_id,
            streamer=streamer,
        )
    end = time.perf_counter()
    first, last = streamer.times[0], streamer.times[-1]
    return {
        "ttft_s": first - start,
        "decode_tps": (len(streamer.times) - 1) / max(last - first, 1e-9),
        "total_s": end - start,
    }


def greedy_request(
    ids: list[int], new_tokens: int, adapter: str | None = None
) -> GenerationRequest:
    return GenerationRequest(
        prompt_token_ids=ids,
        adapter=adapter,
        sampling=SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True),
    )


# --------------------------------------------------------------------------- measurements
def measure_latency(config: BenchConfig, model, engine: InferenceEngine, pad_id: int) -> list[dict]:
    rows = []
    vocab = model.config.vocab_size
    for length in config.prompt_lengths:
        ids = prompt_ids(length, vocab, seed=length)
        new_tokens = config.decode_tokens + 1
        plain = generate_once(model, ids, new_tokens, pad_id)
        result = engine.generate(greedy_request(ids, new_tokens))
        rows.append(
            {
                "prompt": length,
                "generate_ttft_s": plain["ttft_s"],
                "engine_ttft_s": result.metrics.ttft_s,
                "generate_decode_tps": plain["decode_tps"],
                "engine_decode_tps": result.metrics.decode_tokens_per_s,
                "prefill_chunks": result.metrics.prefill_chunks,
            }
        )
        print(f"  prompt {length}: {rows[-1]}", flush=True)
    return rows


def measure_throughput(config: BenchConfig, model, engine: InferenceEngine, pad_id: int) -> dict:
    vocab = model.config.vocab_size
    prompts = [
        prompt_ids(config.throughput_prompt, vocab, seed=1000 + i)
        for i in range(config.concurrency)
    ]
    new_tokens = config.throughput_new_tokens
    total_tokens = new_tokens * len(prompts)

    start = time.perf_counter()
    for ids in prompts:
        generate_once(model, ids, new_tokens, pad_id)
    generate_s = time.perf_counter() - start

    start = time.perf_counter()
    for ids in prompts:
        engine.generate(greedy_request(ids, new_tokens))
    engine_sequential_s = time.perf_counter() - start

    forwards, chunks = engine.stats.prefill_forwards, engine.stats.prefill_chunks
    start = time.perf_counter()
    handles = [engine.submit(greedy_request(ids, new_tokens)) for ids in prompts]
    results = [h.result() for h in handles]
    engine_concurrent_s = time.perf_counter() - start
    assert all(r.usage.completion_tokens == new_tokens for r in results)
    # Packed prefill: first chunks admitted in one step share a forward (how many were
    # admitted together depends on when the scheduler woke up, so this is reported, not set).
    concurrent_prefill_forwards = engine.stats.prefill_forwards - forwards
    concurrent_prefill_chunks = engine.stats.prefill_chunks - chunks
    return {
        "requests": len(prompts),
        "tokens": total_tokens,
        "generate_sequential_tps": total_tokens / generate_s,
        "engine_sequential_tps": total_tokens / engine_sequential_s,
        "engine_concurrent_tps": total_tokens / engine_concurrent_s,
        "max_decode_batch": engine.stats.max_decode_batch,
        "concurrent_prefill_forwards": concurrent_prefill_forwards,
        "concurrent_prefill_chunks": concurrent_prefill_chunks,
    }


def measure_multi_lora(
    config: BenchConfig, engine: InferenceEngine, vocab: int, adapters: list[str]
) -> dict:
    """`concurrency` requests round-robin over `adapters`: one at a time vs all at once."""
    new_tokens = config.throughput_new_tokens
    requests = [
        (prompt_ids(config.throughput_prompt, vocab, seed=2000 + i), adapters[i % len(adapters)])
        for i in range(config.concurrency)
    ]
    total_tokens = new_tokens * len(requests)
    for name in adapters:  # load every adapter before timing
        engine.generate(greedy_request(requests[0][0][:8], 2, adapter=name))

    start = time.perf_counter()
    for ids, name in requests:
        engine.generate(greedy_request(ids, new_tokens, adapter=name))
    sequential_s = time.perf_counter() - start

    start = time.perf_counter()
    handles = [engine.submit(greedy_request(ids, new_tokens, adapter=n)) for ids, n in requests]
    results = [h.result() for h in handles]
    concurrent_s = time.perf_counter() - start
    assert all(r.usage.completion_tokens == new_tokens for r in results)
    return {
        "lora_requests": len(requests),
        "lora_adapters": len(adapters),
        "lora_sequential_tps": total_tokens / sequential_s,
        "lora_concurrent_tps": total_tokens / concurrent_s,
        "lora_max_decode_adapters": engine.stats.max_decode_adapters,
    }


def _timed_batch(engine: InferenceEngine, requests: list[tuple[list[int], str | None]], n: int):
    """All requests at once; (tokens/s, the engine's stats deltas that say how it batched)."""
    stats = engine.stats
    steps, forwards = stats.decode_steps, stats.decode_forwards
    stats.max_decode_adapters = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    handles = [engine.submit(greedy_request(ids, n, adapter=a)) for ids, a in requests]
    results = [h.result() for h in handles]
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    assert all(r.usage.completion_tokens == n for r in results)
    return len(requests) * n / elapsed, {
        # Tokens per CPU-second of this process (every thread): what the batch costs, even
        # when other tenants of a shared machine take the cores away for a while.
        "cpu_tps": len(requests) * n / max(cpu, 1e-9),
        "max_adapters": stats.max_decode_adapters,
        "forwards_per_step": (stats.decode_forwards - forwards)
        / max(1, stats.decode_steps - steps),
    }


def measure_adapter_mix(
    config: BenchConfig, engine: InferenceEngine, vocab: int, adapters: list[str]
) -> list[dict]:
    """For every concurrency: the single-model batch and batches over 1/4/16/64 adapters,
    interleaved round by round (each the best of `mix_repeats`), so a slow spell of the shared
    machine hits every arm alike."""
    new_tokens = config.mix_new_tokens
    for name in adapters:  # every adapter resident before timing (swap-in is measured apart)
        engine.generate(greedy_request([6, 7, 8], 1, adapter=name))
    rows = []
    for concurrency in config.mix_concurrency:
        prompts = [prompt_ids(config.mix_prompt, vocab, seed=3000 + i) for i in range(concurrency)]
        arms: list[int] = [0, *config.mix_adapters]  # 0: the plain base
        best: dict[int, tuple[float, dict]] = {}
        for _ in range(config.mix_repeats):
            for count in arms:
                requests = [
                    (ids, adapters[i % count] if count else None) for i, ids in enumerate(prompts)
                ]
                tps, info = _timed_batch(engine, requests, new_tokens)
                if count not in best or tps > best[count][0]:
                    best[count] = (tps, info)
        base_tps, base_cpu_tps = best[0][0], best[0][1]["cpu_tps"]
        for count in arms:
            tps, info = best[count]
            rows.append(
                {
                    "concurrency": concurrency,
                    "adapters": count,
                    "tps": tps,
                    "vs_single_model": tps / base_tps,
                    "cpu_vs_single_model": info["cpu_tps"] / base_cpu_tps,
                    **info,
                }
            )
            print(f"  {rows[-1]}", flush=True)
    return rows


def measure_swap_in(
    config: BenchConfig, engine: InferenceEngine, vocab: int, paths: list[Path]
) -> dict:
    """Cold adapters requested while 8 base requests decode: the loader thread reads each one
    (files -> CPU tensors) and the scheduler copies it into free pages between two steps. The
    latency is from the request's admission attempt to usable pages (`AdapterPool.swap_ins`)."""
    names = []
    for index in range(config.swap_ins):
        names.append(f"cold-{index}")
        engine.register_adapter(names[-1], str(paths[index % len(paths)]))
    running = [
        engine.submit(greedy_request(prompt_ids(config.mix_prompt, vocab, seed=4000 + i), 256))
        for i in range(8)
    ]
    next(iter(running[0].stream()))  # the batch is decoding
    cold = []
    for name in names:  # one at a time, each while the batch decodes
        handle = engine.submit(greedy_request([6, 7, 8], 2, adapter=name))
        cold.append(handle.result())
    running_done = sum(1 for h in running if h.done)
    for handle in running:
        handle.cancel()
    swaps = [s for s in engine.pool.swap_ins if s.name in names]
    assert len(swaps) == len(names) and all(s.gathered for s in swaps)
    seconds = sorted(s.seconds for s in swaps)
    return {
        "swap_ins": len(swaps),
        "background": sum(s.background for s in swaps),
        "swap_in_median_s": seconds[len(seconds) // 2],
        "swap_in_max_s": seconds[-1],
        "cold_ttft_median_s": sorted(r.metrics.ttft_s for r in cold)[len(cold) // 2],
        "running_finished_meanwhile": running_done,
    }


def profile_decode_forward(
    config: BenchConfig, engine: InferenceEngine, vocab: int, adapters: list[str]
) -> list[dict]:
    """Where one decode step's forward goes with no adapter, 1 adapter and 16 adapters.

    Runs directly on the engine's base instance while the engine is idle (every request has
    finished): `profile_concurrency` rows after a `mix_prompt`-token cache, the rows in the
    order the engine's batch holds them (engine._by_adapter where it exists). Per arm: the best
    of `profile_repeats` interleaved forwards in wall and process CPU time (a shared machine's
    slow spells land in the other repeats), and torch.profiler's count of aten ops per forward
    with the ops the gathered delta adds over the base (self CPU time, one profiled forward).
    The same function measures a checkout of an older engine (the report's "before")."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import DynamicCache

    from gpu_runtime.serving import engine as engine_module

    instance = engine.pool.default
    n = config.profile_concurrency
    ids = torch.tensor([prompt_ids(config.mix_prompt, vocab, seed=5000 + i) for i in range(n)])
    step, position = ids[:, -1:], torch.full((n, 1), config.mix_prompt)
    many = min(MIX_TARGET_ADAPTERS, len(adapters))
    arms = {0: [None] * n, 1: [adapters[0]] * n, many: [adapters[i % many] for i in range(n)]}
    order = getattr(engine_module, "_by_adapter", None)
    if order is not None:  # the batch order of the engine under test
        arms = {k: sorted(v, key=lambda a: order(_Row(a))) for k, v in arms.items()}

    def forward(rows: list[str | None], cache: DynamicCache) -> None:
        instance.forward_rows(
            rows, input_ids=step, position_ids=position, past_key_values=cache, use_cache=True
        )
        cache.crop(-1)  # back to the prompt: every repeat decodes the same position

    best: dict[int, list[float]] = {k: [float("inf"), float("inf")] for k in arms}
    ops: dict[int, dict[str, tuple[int, float]]] = {}
    with torch.inference_mode():
        cache = DynamicCache(config=instance.base.config)
        instance.forward_rows([None] * n, input_ids=ids, past_key_values=cache, use_cache=True)
        for rows in arms.values():
            forward(rows, cache)  # warm-up (plans, caches)
        for _ in range(config.profile_repeats):
            for k, rows in arms.items():
                start, cpu_start = time.perf_counter(), time.process_time()
                forward(rows, cache)
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
                best[k] = [min(best[k][0], wall), min(best[k][1], cpu)]
        for k, rows in arms.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                forward(rows, cache)
            ops[k] = {e.key: (e.count, e.self_cpu_time_total) for e in prof.key_averages()}
    base_ops = ops[0]
    result = []
    for k in arms:
        added = {
            name: (count - base_ops.get(name, (0, 0.0))[0], us - base_ops.get(name, (0, 0.0))[1])
            for name, (count, us) in ops[k].items()
            if count != base_ops.get(name, (0, 0.0))[0]
        }
        top = sorted(added.items(), key=lambda kv: -kv[1][0])[:6]
        result.append(
            {
                "concurrency": n,
                "adapters": k,
                "wall_ms": best[k][0] * 1e3,
                "cpu_ms": best[k][1] * 1e3,
                "vs_base_wall": best[0][0] / best[k][0],
                "vs_base_cpu": best[0][1] / best[k][1],
                "aten_ops": sum(count for count, _ in ops[k].values()),
                "added_ops": ", ".join(
                    f"{name.removeprefix('aten::')} +{c}" for name, (c, _) in top
                ),
            }
        )
        print(f"  {result[-1]}", flush=True)
    return result


@dataclass(frozen=True)
class _Row:
    """What engine._by_adapter reads of a row (its adapter)."""

    adapter: str | None


# --------------------------------------------------------------------------- report
def _profile_lines(config: BenchConfig, rows: list[dict]) -> list[str]:
    """The decode-forward profile of this run, and the recorded one of the engine before."""
    header = [
        "| engine | adapters | best wall ms | vs base (wall) | best CPU ms | vs base (CPU) "
        "| aten ops | ops the delta adds (most frequent) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def table(label: str, profile: list[dict]) -> list[str]:
        return [
            f"| {label} | {r['adapters'] or 'none'} | {r['wall_ms']:.2f} | "
            f"{r['vs_base_wall']:.2f} | {r['cpu_ms']:.2f} | {r['vs_base_cpu']:.2f} | "
            f"{r['aten_ops']} | {r['added_ops'] or '—'} |"
            for r in profile
        ]

    lines = [
        f"### One decode forward, {rows[0]['concurrency']} rows",
        "",
        f"The engine's base instance, idle engine: {rows[0]['concurrency']} rows after "
        f"{config.mix_prompt}-token prompts, in the engine's batch order; best of "
        f"{config.profile_repeats} interleaved forwards, wall and process CPU time; aten ops "
        "per forward from torch.profiler (views included), and the ops the gathered delta "
        "adds over the base forward.",
        "",
        *header,
        *table("this run", rows),
    ]
    if PROFILE_BEFORE.is_file():
        before = json.loads(PROFILE_BEFORE.read_text())
        lines += table(f"before ({before['commit']}, {before['threads']} threads)", before["rows"])
        lines += [
            "",
            f"'before' is `{PROFILE_BEFORE.relative_to(REPO_ROOT)}`, recorded with "
            f"`python benchmarks/inference.py --profile-only ... --threads {before['threads']}` "
            f"on a checkout of {before['commit']} (the same profile function, copied there) on "
            "the same machine in the same session: it is not re-measured by this run.",
        ]
    return [*lines, ""]


def verdicts(
    latency: list[dict], throughput: dict, mix: list[dict] | None = None
) -> dict[str, bool]:
    met = {
        "ttft": all(r["engine_ttft_s"] <= TTFT_TOLERANCE * r["generate_ttft_s"] for r in latency),
        "throughput": throughput["engine_concurrent_tps"]
        >= THROUGHPUT_TARGET * throughput["generate_sequential_tps"],
    }
    target_rows = [r for r in mix or [] if r["adapters"] == MIX_TARGET_ADAPTERS]
    if target_rows:
        met["mixed_adapters"] = all(r["vs_single_model"] >= MIX_TARGET for r in target_rows)
    return met


def render_report(
    config: BenchConfig, latency: list[dict], throughput: dict, command: str, wall_s: float
) -> str:
    mix, swap = throughput["mix"], throughput["swap"]
    met = verdicts(latency, throughput, mix)
    lines = [
        "# Inference serving benchmark",
        "",
        f"Reproduce: `{command}`",
        "",
        f"Model: random-weight Llama, {config.num_layers} layers, hidden {config.hidden_size}, "
        f"heads {config.num_heads}/{config.num_kv_heads} (GQA), original context "
        f"{config.original_context}, served with YaRN at {config.served_context}. "
        f"Engine prefill chunk: {config.prefill_chunk_size} tokens. "
        f"Machine: {_platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. Whole run: {wall_s:.0f} s. Load average at the "
        f"start / end: {throughput['load'][0]:.1f} / {throughput['load'][1]:.1f} on "
        f"{os.cpu_count()} cores (above the thread count, other processes shared the cores: "
        "compare within the run, and trust the CPU-second ratios over wall-clock ones).",
        "",
        "## Single request: TTFT and decode speed",
        "",
        "| prompt tokens | generate TTFT (s) | engine TTFT (s) | TTFT ratio (engine/generate) "
        "| generate decode tok/s | engine decode tok/s | engine prefill chunks |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in latency:
        lines.append(
            f"| {r['prompt']} | {r['generate_ttft_s']:.3f} | {r['engine_ttft_s']:.3f} | "
            f"{r['engine_ttft_s'] / r['generate_ttft_s']:.2f} | {r['generate_decode_tps']:.1f} | "
            f"{r['engine_decode_tps']:.1f} | {r['prefill_chunks']} |"
        )
    t = throughput
    ratio = t["engine_concurrent_tps"] / t["generate_sequential_tps"]
    lora_ratio = t["lora_concurrent_tps"] / t["lora_sequential_tps"]
    lines += [
        "",
        f"## Aggregate throughput: {t['requests']} requests × "
        f"{config.throughput_new_tokens} new tokens, {config.throughput_prompt}-token prompts",
        "",
        "| mode | tokens/s | vs sequential generate |",
        "|---|---|---|",
        f"| model.generate, sequential | {t['generate_sequential_tps']:.1f} | 1.00 |",
        f"| engine, sequential | {t['engine_sequential_tps']:.1f} | "
        f"{t['engine_sequential_tps'] / t['generate_sequential_tps']:.2f} |",
        f"| engine, concurrency {t['requests']} (max decode batch {t['max_decode_batch']}) | "
        f"{t['engine_concurrent_tps']:.1f} | {ratio:.2f} |",
        f"| engine, concurrency {t['lora_requests']} over {t['lora_adapters']} LoRA adapters "
        f"(max {t['lora_max_decode_adapters']} adapters in one forward; {lora_ratio:.2f}× the "
        f"same requests sequentially, {t['lora_sequential_tps']:.1f} tok/s) | "
        f"{t['lora_concurrent_tps']:.1f} | "
        f"{t['lora_concurrent_tps'] / t['generate_sequential_tps']:.2f} |",
        "",
        f"Prefill of the concurrent run: {t['concurrent_prefill_chunks']} prompt chunks in "
        f"{t['concurrent_prefill_forwards']} forwards (first chunks of prompts admitted in the "
        "same step are packed into one row; positions restart at 0 per prompt).",
        "",
        f"Multi-LoRA: {t['lora_requests']} requests round-robin over {t['lora_adapters']} random "
        f"rank-{config.lora_rank} adapters (all linear layers) decode in one forward per step "
        f"(gathered LoRA): {t['lora_concurrent_tps']:.1f} tok/s concurrently vs "
        f"{t['lora_sequential_tps']:.1f} tok/s one at a time — {lora_ratio:.2f}×.",
        "",
        "## Mixed-adapter batches (gathered LoRA)",
        "",
        f"{config.mix_prompt}-token prompts, {config.mix_new_tokens} new tokens each, requests "
        f"round-robin over the adapters (random rank-{config.lora_rank}, all linear layers); "
        f"each row is the best of {config.mix_repeats} interleaved rounds. 'vs single model' "
        "divides by the batch of the same size with no adapter, measured in the same rounds.",
        "",
        "| concurrent requests | adapters | tokens/s | vs single model | tokens per CPU-s "
        "| vs single model (CPU) | max adapters in one forward | decode forwards per step |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['concurrency']} | {r['adapters'] or 'none (single model)'} | {r['tps']:.1f} "
            f"| {r['vs_single_model']:.2f} | {r['cpu_tps']:.1f} | "
            f"{r['cpu_vs_single_model']:.2f} | {r['max_adapters']} | "
            f"{r['forwards_per_step']:.2f} |"
            for r in mix
        ),
        "",
        *_profile_lines(config, throughput["profile"]),
        f"Swap-in: {swap['swap_ins']} cold adapters requested one at a time while 8 base "
        f"requests decoded ({swap['background']} read on the loader thread, the batch kept "
        f"stepping): median {swap['swap_in_median_s'] * 1000:.1f} ms, max "
        f"{swap['swap_in_max_s'] * 1000:.1f} ms from the request's first admission attempt to "
        f"usable pages (file read + copy into free pages); the cold requests' median TTFT "
        f"{swap['cold_ttft_median_s'] * 1000:.1f} ms.",
        "",
        "## Targets",
        "",
        f"- Throughput at concurrency {t['requests']} ≥ {THROUGHPUT_TARGET:.0f}× sequential "
        f"generate: {ratio:.2f}× — {'MET' if met['throughput'] else 'NOT MET'}",
        f"- Engine TTFT no worse than generate (≤ {TTFT_TOLERANCE:.2f}×, timing noise): "
        f"{'MET' if met['ttft'] else 'NOT MET'}",
        *(
            [
                f"- {MIX_TARGET_ADAPTERS} distinct adapters ≥ {MIX_TARGET}× the single-model "
                "batch of the same size (every size): "
                + ", ".join(
                    f"{r['concurrency']}: {r['vs_single_model']:.2f}×"
                    for r in mix
                    if r["adapters"] == MIX_TARGET_ADAPTERS
                )
                + f" — {'MET' if met['mixed_adapters'] else 'NOT MET'} (per CPU-second, which a "
                "shared machine's other tenants disturb less: "
                + ", ".join(
                    f"{r['concurrency']}: {r['cpu_vs_single_model']:.2f}×"
                    for r in mix
                    if r["adapters"] == MIX_TARGET_ADAPTERS
                )
                + ")"
            ]
            if "mixed_adapters" in met
            else []
        ),
        "",
        "## How the engine prefills a long prompt",
        "",
        "generate prefills the whole prompt in one causal call (LongTune varlen SDPA, no "
        "mask). The engine feeds it in `prefill_chunk_size` chunks so other requests keep "
        "decoding in between; every chunk after the first attends the cache plus itself "
        "through `gpu_runtime.attention.cached_chunk_attention`: one unmasked SDPA of the "
        "chunk over the cached keys (GQA heads stacked, no KV copy) and one causal SDPA of the "
        "chunk over itself, merged by log-sum-exp — no [chunk, cache + chunk] mask is built "
        "(flash-attn's bottom-right causal kernel on GPU). Before that change later chunks went "
        "through transformers' masked SDPA (GQA repeat + bool→float mask per layer) and TTFT "
        "was 1.52× generate at 8K and 1.54× at 16K. Where the engine comes out ahead of "
        "generate, the chunks' smaller working set (2048-token activations) is the likely "
        "reason; it has not been profiled.",
        "",
    ]
    return "\n".join(lines)


def _engine(config: BenchConfig, cache_root: Path):
    model_dir = ensure_model(config, cache_root)
    tokenizer = load_tokenizer(str(model_dir))
    model = load_model(str(model_dir), rope_method="yarn", target_context=config.served_context)
    model.eval()
    engine = InferenceEngine(
        EngineConfig(
            base_model=str(model_dir),
            rope_method="yarn",
            target_context=config.served_context,
            prefill_chunk_size=config.prefill_chunk_size,
            max_batch_size=max(16, config.concurrency, *config.mix_concurrency),
            max_loaded_adapters=max(config.mix_adapters) + config.swap_ins + config.lora_adapters,
        ),
        model=model,
        tokenizer=tokenizer,
    )
    return model_dir, model, tokenizer, engine


def run_profile(config: BenchConfig, cache_root: Path) -> list[dict]:
    """The decode-forward profile alone (`--profile-only`): also runs against an older
    checkout of the engine, to record the report's "before"."""
    model_dir, model, _, engine = _engine(config, cache_root)
    try:
        count = min(MIX_TARGET_ADAPTERS, max(config.mix_adapters))
        names = []
        for index, path in enumerate(ensure_adapters(config, model_dir, cache_root, count)):
            names.append(f"bench-lora{index}")
            engine.register_adapter(names[-1], str(path))
            engine.generate(greedy_request([6, 7, 8], 1, adapter=names[-1]))  # resident
        return profile_decode_forward(config, engine, model.config.vocab_size, names)
    finally:
        engine.shutdown()


def run(config: BenchConfig, cache_root: Path) -> tuple[list[dict], dict]:
    model_dir, model, tokenizer, engine = _engine(config, cache_root)
    try:
        # Warm-up both paths once (allocator, kernels, lazy imports) before timing.
        warm = prompt_ids(64, model.config.vocab_size, seed=1)
        generate_once(model, warm, 4, tokenizer.pad_token_id)
        engine.generate(greedy_request(warm, 4))
        print("latency:", flush=True)
        latency = measure_latency(config, model, engine, tokenizer.pad_token_id)
        print("throughput:", flush=True)
        throughput = measure_throughput(config, model, engine, tokenizer.pad_token_id)
        print(f"  {throughput}", flush=True)
        print("multi-LoRA throughput:", flush=True)
        count = max(config.lora_adapters, *config.mix_adapters)
        paths = ensure_adapters(config, model_dir, cache_root, count)
        names = []
        for index, path in enumerate(paths):
            names.append(f"bench-lora{index}")
            engine.register_adapter(names[-1], str(path))
        lora = measure_multi_lora(
            config, engine, model.config.vocab_size, names[: config.lora_adapters]
        )
        print(f"  {lora}", flush=True)
        print(
            f"  concurrent / sequential over {len(names)} adapters: "
            f"{lora['lora_concurrent_tps'] / lora['lora_sequential_tps']:.2f}x",
            flush=True,
        )
        throughput.update(lora)
        print("swap-in while a batch decodes:", flush=True)
        throughput["swap"] = measure_swap_in(config, engine, model.config.vocab_size, paths)
        print(f"  {throughput['swap']}", flush=True)
        print("mixed-adapter batches:", flush=True)
        throughput["mix"] = measure_adapter_mix(config, engine, model.config.vocab_size, names)
        print("decode forward profile:", flush=True)
        throughput["profile"] = profile_decode_forward(
            config, engine, model.config.vocab_size, names
        )
    finally:
        engine.shutdown()
    return latency, throughput


def _commit() -> str:
    """The checkout's commit (the engine under test), for recorded profiles."""
    import subprocess

    done = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (seconds)")
    parser.add_argument("--out", type=Path, default=None, help="markdown report path")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default torch's; 1 on an oversubscribed machine, where "
        "OpenMP threads spin waiting for each other)",
    )
    parser.add_argument(
        "--mix-repeats",
        type=int,
        default=None,
        help="interleaved rounds per mixed-adapter row, best kept (default 5; more on a "
        "shared machine, whose slow spells then land in the discarded rounds)",
    )
    parser.add_argument(
        "--profile-only",
        type=Path,
        default=None,
        metavar="JSON",
        help="run only the decode-forward profile and write it to JSON (e.g. on a checkout "
        f"of an older engine, for the report's before: {PROFILE_BEFORE.relative_to(REPO_ROOT)})",
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = quick_config() if args.quick else BenchConfig()
    if args.mix_repeats is not None:
        config = replace(config, mix_repeats=args.mix_repeats)
    if args.profile_only is not None:
        rows = run_profile(config, args.cache_dir)
        record = {"commit": _commit(), "threads": torch.get_num_threads(), "rows": rows}
        args.profile_only.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.profile_only}")
        return ""
    out = args.out or (None if args.quick else DEFAULT_RESULTS)
    command = "python benchmarks/inference.py" + (" --quick" if args.quick else "")
    if args.threads is not None:
        command += f" --threads {args.threads}"
    if args.mix_repeats is not None:
        command += f" --mix-repeats {args.mix_repeats}"
    start, load = time.perf_counter(), os.getloadavg()[0]
    latency, throughput = run(config, args.cache_dir)
    throughput["load"] = (load, os.getloadavg()[0])
    report = render_report(config, latency, throughput, command, time.perf_counter() - start)
    print(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        print(f"wrote {out}")
    print(f"reproduce: {shlex.join(shlex.split(command))}")
    return report


if __name__ == "__main__":
    main()
