"""One decode forward of the serving engine's base instance with 16 gathered adapters, under
variants of the LoRA delta hook, against the plain base forward in the same run.

WHY: issue 17's target (16 adapters >= 0.8x the single-model batch) was missed at 8 and 32
requests, and two costs were named: the q/k/v (and gate/up) LoRA A matmuls run once per
module although they read the same input, and torch's threading of tiny ops. This measures
each idea on the real forward (the model and adapters of benchmarks/inference.py) instead of
guessing:

  base                 no adapter in the batch (the denominator)
  gathered             the engine's hook as it is (small deltas on one thread on CPU,
                       gathered.SERIAL_DELTA_MACS)
  gathered, threaded   the same hook with every delta on torch's threads (SERIAL_DELTA_MACS
                       = 0): the engine before the one-thread change
  gathered, fused A    a prototype: q/k/v and gate/up share one gathered A (one bmm of
                       [G, m, d_in] x [G, d_in, k*r] per input, each module then adds its
                       own slice through its B), otherwise the engine's hook

Rows are sorted by adapter as the engine's batch holds them (round-robin over 16 adapters).
Each variant: the best of `--repeats` interleaved rounds of 3 forwards, wall and process CPU
time; logits checked equal to the engine's hook (max abs difference printed).

Run:  python benchmarks/gathered_delta.py                 (rows 8 and 32, torch's threads)
      python benchmarks/gathered_delta.py --threads 1     (the one-thread change is then inert)
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # allow `python benchmarks/gathered_delta.py`
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.inference import (  # noqa: E402
    DEFAULT_CACHE,
    BenchConfig,
    _engine,
    ensure_adapters,
    greedy_request,
    prompt_ids,
)
from gpu_runtime.serving import gathered  # noqa: E402

ADAPTERS = 16
# Modules of one Llama block that read the same input (the prototype's fused groups).
SHARED_INPUT = {
    "q_proj": "qkv",
    "k_proj": "qkv",
    "v_proj": "qkv",
    "gate_proj": "gu",
    "up_proj": "gu",
}
GROUP_MEMBERS = {"qkv": ("q_proj", "k_proj", "v_proj"), "gu": ("gate_proj", "up_proj")}


def fused_a_hook(store: gathered.GatheredLora, stash: dict):
    """The prototype hook: one A matmul per shared input, cached in `stash` per forward.

    Only the view layout (sorted equal runs, what these batches are) is fused; any other
    plan falls back to the engine's delta."""

    def fused_delta(pool, plan, x: torch.Tensor, output: torch.Tensor) -> None:
        parent, leaf = pool.path.rsplit(".", 1)
        group = SHARED_INPUT.get(leaf)
        if group is None or plan.take is not None or plan.index is not None:
            return real_delta(pool, plan, x, output)
        members = [f"{parent}.{m}" for m in GROUP_MEMBERS[group]]
        if not all(m in plan.targets for m in members):
            return real_delta(pool, plan, x, output)
        key = (parent, group)
        weights = plan.weights if plan.weights is not None else {}
        if key not in weights:  # [G, d_in, k*r]: the members' A^T side by side
            mats = [store._pools[m].weights(plan)[0] for m in members]
            weights[key] = torch.cat([a.transpose(1, 2) for a in mats], 1).transpose(1, 2)
        g, d_in, d_out = plan.groups, x.shape[-1], output.shape[-1]
        xs, out = (x, output) if plan.span is None else (plan.narrow(x), plan.narrow(output))
        held = stash.get(key)
        if held is None or held[0] is not x:
            held = stash[key] = (x, torch.bmm(xs.reshape(g, -1, d_in), weights[key]))
        r = plan.pages.shape[1]
        j = members.index(pool.path)
        _, b = pool.weights(plan)
        out.view(g, -1, d_out).baddbmm_(held[1][:, :, j * r : (j + 1) * r], b)  # [G, m*S, r]

    real_delta = gathered._ModulePool._delta
    return fused_delta


def measure(rows_list: list[int], repeats: int) -> list[dict]:
    config = BenchConfig()
    model_dir, model, _, engine = _engine(config, DEFAULT_CACHE)
    from transformers import DynamicCache

    real_delta, real_bound = gathered._ModulePool._delta, gathered.SERIAL_DELTA_MACS
    results = []
    try:
        names = []
        for index, path in enumerate(ensure_adapters(config, model_dir, DEFAULT_CACHE, ADAPTERS)):
            names.append(f"bench-lora{index}")
            engine.register_adapter(names[-1], str(path))
            engine.generate(greedy_request([6, 7, 8], 1, adapter=names[-1]))  # resident
        instance = engine.pool.default
        store = instance.gathered
        stash: dict = {}
        variants = {
            "base": (real_delta, real_bound, False),
            "gathered": (real_delta, real_bound, True),
            "gathered, threaded": (real_delta, 0, True),
            "gathered, fused A": (fused_a_hook(store, stash), real_bound, True),
        }
        for n in rows_list:
            ids = torch.tensor(
                [prompt_ids(config.mix_prompt, model.config.vocab_size, 5000 + i) for i in range(n)]
            )
            step, position = ids[:, -1:], torch.full((n, 1), config.mix_prompt)
            mixed = sorted(names[i % ADAPTERS] for i in range(n))

            def forward(rows, cache, step=step, position=position):
                stash.clear()
                logits = instance.forward_rows(
                    rows, input_ids=step, position_ids=position, past_key_values=cache,
                    use_cache=True,
                ).logits  # fmt: skip
                stash.clear()
                cache.crop(-1)  # back to the prompt: every repeat decodes the same position
                return logits

            best = {k: [float("inf"), float("inf")] for k in variants}
            logits = {}
            with torch.inference_mode():
                cache = DynamicCache(config=instance.base.config)
                instance.forward_rows([None] * n, input_ids=ids, past_key_values=cache)
                for round_ in range(repeats):
                    for name, (delta, bound, adapters) in variants.items():
                        gathered._ModulePool._delta, gathered.SERIAL_DELTA_MACS = delta, bound
                        rows = mixed if adapters else [None] * n
                        out = forward(rows, cache)  # warm-up (plans, caches)
                        if round_ == 0:
                            logits[name] = out
                        start, cpu = time.perf_counter(), time.process_time()
                        for _ in range(3):
                            forward(rows, cache)
                        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
                        best[name] = [min(best[name][0], wall / 3), min(best[name][1], cpu / 3)]
            for name in variants:
                reference = logits["gathered"] if variants[name][2] else logits["base"]
                results.append(
                    {
                        "rows": n,
                        "variant": name,
                        "wall_ms": best[name][0] * 1e3,
                        "cpu_ms": best[name][1] * 1e3,
                        "vs_base_wall": best["base"][0] / best[name][0],
                        "vs_base_cpu": best["base"][1] / best[name][1],
                        "max_abs_diff": (logits[name] - reference).abs().max().item(),
                    }
                )
                print(f"  {results[-1]}", flush=True)
    finally:
        gathered._ModulePool._delta, gathered.SERIAL_DELTA_MACS = real_delta, real_bound
        engine.shutdown()
    return results


def probe_ops(calls: int = 2000) -> list[dict]:
    """Two probes of what one module's delta costs, at the shapes of a 32-row step (16 groups
    of 2 rows, rank 8, d_in 256 / d_out 688):

    - the latency spread of one `bmm` and one `baddbmm_` at torch's current threads (median
      and 90th percentile of `calls` calls): with 2 threads on busy cores an OpenMP region
      waits for its second thread, which the median hides and the tail shows;
    - streaming vs bmm from cold caches, on one thread: 28 modules' worth of distinct A matrices (the 4
      layers x 7 modules of the model), caches flushed between rounds, per module: the bmm
      against a plain `A.sum()` over the same bytes (a memory-bound floor)."""
    g, m, r = 16, 2, 8
    x, a = torch.randn(g, m, 256), torch.randn(g, r, 256)
    xa, b, out = torch.randn(g, m, r), torch.randn(g, r, 688), torch.randn(g, m, 688)
    rows = []
    with torch.inference_mode():
        for name, op in (
            ("bmm A [16,2,256]x[16,256,8]", lambda: torch.bmm(x, a.transpose(1, 2))),
            ("baddbmm_ B [16,2,8]x[16,8,688]", lambda: out.baddbmm_(xa, b)),
        ):
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                op()
                times.append(time.perf_counter() - start)
            times.sort()
            rows.append(
                {
                    "probe": f"{name}, latency",
                    "median_us": times[len(times) // 2] * 1e6,
                    "p90_us": times[int(len(times) * 0.9)] * 1e6,
                }
            )
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the cold probe measures memory, not thread scheduling
        dims = [(256, 256), (256, 128), (256, 128), (256, 256), (256, 688), (256, 688), (688, 256)]
        mats = [(torch.randn(g, m, d), torch.randn(g, r, d)) for d, _ in dims * 4]
        flush = [torch.randn(256, 688) for _ in range(40)]  # ~28 MB through the caches
        for name, op in (
            ("bmm(x, A^T), cold", lambda x_, a_: torch.bmm(x_, a_.transpose(1, 2))),
            ("A.sum(), cold", lambda x_, a_: a_.sum()),
        ):
            best = float("inf")
            for _ in range(20):
                for t in flush:
                    t.add_(1.0)
                start = time.process_time()
                for x_, a_ in mats:
                    op(x_, a_)
                best = min(best, (time.process_time() - start) / len(mats))
            kb = sum(a_.numel() * 4 for _, a_ in mats) / len(mats) / 1e3
            rows.append(
                {"probe": f"{name}, 1 thread ({kb:.0f} KB of A a module)", "best_us": best * 1e6}
            )
        torch.set_num_threads(threads)
    for row in rows:
        print(f"  {row}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/gathered_delta.py" + (
        f" --rows {' '.join(map(str, args.rows))}" if args.rows != [8, 32] else ""
    )
    if args.repeats != 30:
        command += f" --repeats {args.repeats}"
    if args.threads is not None:
        command += f" --threads {args.threads}"
    load = os.getloadavg()[0]
    rows = measure(args.rows, args.repeats)
    print(
        f"\n{torch.get_num_threads()} torch threads; load average {load:.1f} -> "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n"
    )
    print(
        "| rows | variant | best wall ms | vs base (wall) | best CPU ms | vs base (CPU) | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['rows']} | {r['variant']} | {r['wall_ms']:.2f} | {r['vs_base_wall']:.2f} | "
            f"{r['cpu_ms']:.2f} | {r['vs_base_cpu']:.2f} | {r['max_abs_diff']:.1e} |"
        )
    probes = probe_ops()
    print("\n| probe | median us | p90 us | best us |")
    print("|---|---|---|---|")
    for p in probes:
        cells = [f"{p[k]:.1f}" if k in p else "—" for k in ("median_us", "p90_us", "best_us")]
        print(f"| {p['probe']} | " + " | ".join(cells) + " |")
    print(f"\nreproduce: {shlex.join(shlex.split(command))}")


if __name__ == "__main__":
    main()
