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
     different adapters share one decode forward (peft mixed-batch LoRA); the ratio says what
     that batching buys when every request wants its own adapter.
Targets: concurrency-8 throughput ≥ 2× sequential generate; engine TTFT ≤ generate TTFT
(within 10% timing noise on shared cores).

Run:  python benchmarks/inference.py           (~5-8 min on 2 CPU cores)
      python benchmarks/inference.py --quick   (seconds; smoke-test sizes)
"""

from __future__ import annotations

import argparse
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
TTFT_TOLERANCE = 1.10  # engine TTFT may be at most 10% above generate's (timing noise)
THROUGHPUT_TARGET = 2.0


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


def ensure_adapters(config: BenchConfig, model_dir: Path, cache_root: Path) -> list[Path]:
    """Random LoRA adapters for the cached model (built once, next to it).

    lora_B is random (seeded) rather than peft's zeros so every adapter changes the outputs.
    No config.json is saved with them: they are served on the engine's base (one RoPE group)."""
    from peft import LoraConfig, get_peft_model

    paths = []
    for index in range(config.lora_adapters):
        path = cache_root / f"{model_dir.name}-lora{index}-r{config.lora_rank}"
        paths.append(path)
        if (path / "adapter_config.json").is_file():
            continue
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(100 + index)
            peft_model = get_peft_model(
                load_model(str(model_dir)),
                LoraConfig(
                    r=config.lora_rank,
                    lora_alpha=2 * config.lora_rank,
                    lora_dropout=0.0,
                    target_modules="all-linear",
                ),
            )
            with torch.no_grad():
                for name, param in peft_model.named_parameters():
                    if "lora_B" in name:
                        param.normal_(0.0, 0.02)
        peft_model.save_pretrained(path)
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


# --------------------------------------------------------------------------- report
def verdicts(latency: list[dict], throughput: dict) -> dict[str, bool]:
    return {
        "ttft": all(r["engine_ttft_s"] <= TTFT_TOLERANCE * r["generate_ttft_s"] for r in latency),
        "throughput": throughput["engine_concurrent_tps"]
        >= THROUGHPUT_TARGET * throughput["generate_sequential_tps"],
    }


def render_report(
    config: BenchConfig, latency: list[dict], throughput: dict, command: str, wall_s: float
) -> str:
    met = verdicts(latency, throughput)
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
        f"{torch.get_num_threads()} threads. Whole run: {wall_s:.0f} s.",
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
        f"(peft mixed-batch LoRA): {t['lora_concurrent_tps']:.1f} tok/s concurrently vs "
        f"{t['lora_sequential_tps']:.1f} tok/s one at a time — {lora_ratio:.2f}×.",
        "",
        "## Targets",
        "",
        f"- Throughput at concurrency {t['requests']} ≥ {THROUGHPUT_TARGET:.0f}× sequential "
        f"generate: {ratio:.2f}× — {'MET' if met['throughput'] else 'NOT MET'}",
        f"- Engine TTFT no worse than generate (≤ {TTFT_TOLERANCE:.2f}×, timing noise): "
        f"{'MET' if met['ttft'] else 'NOT MET'}",
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


def run(config: BenchConfig, cache_root: Path) -> tuple[list[dict], dict]:
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
            max_batch_size=max(16, config.concurrency),
        ),
        model=model,
        tokenizer=tokenizer,
    )
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
        names = []
        for index, path in enumerate(ensure_adapters(config, model_dir, cache_root)):
            names.append(f"bench-lora{index}")
            engine.register_adapter(names[-1], str(path))
        lora = measure_multi_lora(config, engine, model.config.vocab_size, names)
        print(f"  {lora}", flush=True)
        print(
            f"  concurrent / sequential over {len(names)} adapters: "
            f"{lora['lora_concurrent_tps'] / lora['lora_sequential_tps']:.2f}x",
            flush=True,
        )
        throughput.update(lora)
    finally:
        engine.shutdown()
    return latency, throughput


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (seconds)")
    parser.add_argument("--out", type=Path, default=None, help="markdown report path")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    config = quick_config() if args.quick else BenchConfig()
    out = args.out or (None if args.quick else DEFAULT_RESULTS)
    command = "python benchmarks/inference.py" + (" --quick" if args.quick else "")
    start = time.perf_counter()
    latency, throughput = run(config, args.cache_dir)
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
