"""Per-rank memory of ONE attention op (forward + backward): one process vs Ulysses vs ring.

WHY: a whole training step's per-rank peak (benchmarks/sequence_parallel.py) mixes the
attention backward with the MLP tiles, the checkpoints and the loss chunk, so it cannot say
what ring attention's backward holds beyond the one-process kernel, which is the number the
memory planner needs (``memory_planner._ring_backward_extra_bytes``). This isolates the op:
each rank holds q/k/v [1, H, t, D] fp32 of its t tokens (leaves, so they are not counted),
runs the op forward, then backward with a random output gradient, and reports, from the
kernel's RSS high-water mark (VmHWM, reset through /proc/self/clear_refs):

  forward peak    = peak above the RSS before the forward,
  saved           = RSS after the forward above it (what autograd keeps + the output),
  backward peak   = peak above the RSS the backward began with,

in units of one [t x hidden] fp32 tensor. The baseline is the one-process varlen kernel on
the same t tokens, measured in the same run; the planner's ring figure is printed beside.

Run:  python benchmarks/attention_memory.py                 (t = 8,192 per rank; N = 2, 4)
      python benchmarks/attention_memory.py --kv-heads 2 [--dtype bfloat16]
                                                          (grouped-query attention, 16 bits)
      python benchmarks/attention_memory.py --quick         (seconds: t = 1,024, N = 2)
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import rank_results  # noqa: E402  (after the sys.path line above)

HEADS, HEAD_DIM = 8, 64  # train_memory.py's model: hidden 512, 8 heads, no GQA


def _kb(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(field_name)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def child(mode: str, per_rank: int, document: int, kv_heads: int, dtype_name: str) -> dict:
    """One rank: the op's forward and backward on q [1, HEADS, per_rank, HEAD_DIM] and k/v
    [1, kv_heads, per_rank, HEAD_DIM] in `dtype_name`."""
    import gc
    from dataclasses import replace

    import torch
    import torch.distributed as dist

    from gpu_runtime import sequence_parallel as sp
    from gpu_runtime.attention import varlen_attention
    from gpu_runtime.distributed import init_distributed

    torch.set_num_threads(1)
    ctx = init_distributed()
    degree = ctx.world_size
    total = per_rank * degree
    positions = (torch.arange(total) % document)[None]  # [1, L]: a document every `document`
    generator = torch.Generator().manual_seed(ctx.rank)
    dtype = getattr(torch, dtype_name)

    def leaf(heads: int) -> torch.Tensor:  # [1, heads, t, D]
        x = torch.randn(1, heads, per_rank, HEAD_DIM, generator=generator)
        return x.to(dtype).requires_grad_()

    q, k, v = leaf(HEADS), leaf(kv_heads), leaf(kv_heads)
    unit_kb = per_rank * HEADS * HEAD_DIM * 4 / 1024
    gc.collect()
    before = _kb("VmRSS")
    _reset_peak()
    if degree == 1:
        out = varlen_attention(q, k, v, positions)  # [1, t, H, D]
    else:
        layout = replace(sp.init_sequence_layout(ctx, degree), mode=mode)
        shard = sp.SequenceShard(layout, positions)
        attend = sp.ulysses_attention if mode == "ulysses" else sp.ring_attention
        out = attend(q, k, v, shard)  # [1, t, H, D]
    forward_peak, after_forward = _kb("VmHWM"), _kb("VmRSS")
    grad = torch.randn(out.shape, generator=generator).to(dtype)
    gc.collect()
    before_backward = _kb("VmRSS")
    _reset_peak()
    out.backward(grad)
    backward_peak = _kb("VmHWM")
    if degree > 1:
        dist.barrier()  # leave together (gpu_runtime.distributed.shutdown says why)
        dist.destroy_process_group()
    return {
        "rank": ctx.rank,
        "mode": mode,
        "world": degree,
        "tokens_per_rank": per_rank,
        "forward_peak_units": (forward_peak - before) / unit_kb,
        "saved_units": (after_forward - before) / unit_kb,
        "backward_peak_units": (backward_peak - before_backward) / unit_kb,
    }


def run_case(
    mode: str, world: int, per_rank: int, document: int, kv_heads: int = HEADS, dtype="float32"
) -> dict:
    """The worst rank of one case, in fresh processes."""
    args = [str(Path(__file__).resolve()), "--child", mode, str(per_rank), str(document)]
    args += [str(kv_heads), dtype]
    if world == 1:
        command = [sys.executable, *args]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command = [*launcher, "--nproc_per_node", str(world), *args]
    with tempfile.TemporaryDirectory() as results_dir:
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1"}
        env[rank_results.ENV] = results_dir
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        try:
            ranks = rank_results.read(Path(results_dir), world, done)
        except RuntimeError as error:
            raise RuntimeError(f"{mode} x {world} failed: {error}") from None
    return max(ranks, key=lambda r: r["backward_peak_units"])


def planner_ring_extra_units(per_rank: int, kv_heads: int = HEADS, dtype="float32") -> float:
    """memory_planner's ring backward extra for this op, in the same units ([t x hidden]
    fp32)."""
    from gpu_runtime import memory_planner as mp

    model = mp.ModelShape(
        layers=1,
        hidden=HEADS * HEAD_DIM,
        intermediate=1,
        heads=HEADS,
        kv_heads=kv_heads,
        vocab=1,
    )
    unit = per_rank * model.hidden * 4.0
    act = mp.DTYPE_BYTES[dtype]
    return mp._ring_backward_extra_bytes(model, per_rank, act) / unit


def report(
    rows: list[dict],
    per_rank: int,
    document: int,
    argv: Sequence[str],
    kv_heads: int = HEADS,
    dtype: str = "float32",
) -> str:
    single = next(r for r in rows if r["world"] == 1)
    lines = [
        "# One attention op's per-rank memory: one process, Ulysses, ring",
        "",
        f"q [1, {HEADS}, t, {HEAD_DIM}], k/v [1, {kv_heads}, t, {HEAD_DIM}], {dtype}, per rank, "
        f"t = {per_rank:,} tokens, documents "
        f"of {document:,} tokens, one thread per rank, gloo. Units: one [t x hidden] fp32 "
        f"tensor ({per_rank * HEADS * HEAD_DIM * 4 / 2**20:.0f} MB). Peaks from VmHWM (reset "
        "before each pass); worst rank shown. Baseline: the one-process kernel on t tokens.",
        "",
        "| layout | forward peak | saved after forward | backward peak | backward − one process |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        label = "one process" if r["world"] == 1 else f"{r['mode']} × {r['world']}"
        extra = r["backward_peak_units"] - single["backward_peak_units"]
        lines.append(
            f"| {label} | {r['forward_peak_units']:.2f} | {r['saved_units']:.2f} "
            f"| {r['backward_peak_units']:.2f} | {extra:+.2f} |"
        )
    planner = planner_ring_extra_units(per_rank, kv_heads, dtype)
    rings = [
        r["backward_peak_units"] - single["backward_peak_units"]
        for r in rows
        if r["mode"] == "ring"
    ]
    lines += [
        "",
        f"- memory_planner's ring backward extra (`_ring_backward_extra_bytes`): "
        f"{planner:.2f} units; measured {', '.join(f'{x:.2f}' for x in rings)} "
        f"(error {', '.join(f'{planner / x - 1:+.0%}' for x in rings)})",
        "",
        f"Machine load when written: {os.getloadavg()[0]:.1f} (1-min load average)",
        "",
        "Reproduce: `"
        + " ".join(["python benchmarks/attention_memory.py", *map(shlex.quote, argv)])
        + "`",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "--child":
        rank_results.write(child(argv[1], int(argv[2]), int(argv[3]), int(argv[4]), argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=8192, help="tokens per rank")
    parser.add_argument("--document-tokens", type=int, default=4096)
    parser.add_argument("--worlds", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--output", type=Path, help="write the report here too")
    parser.add_argument("--quick", action="store_true", help="t = 1,024 per rank, N = 2")
    parser.add_argument("--kv-heads", type=int, default=HEADS, help=f"of {HEADS} query heads")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)
    if args.quick:
        args.tokens, args.document_tokens, args.worlds = 1024, 512, [2]
    rows = run_cases(args.tokens, args.document_tokens, args.worlds, args.kv_heads, args.dtype)
    text = report(rows, args.tokens, args.document_tokens, argv, args.kv_heads, args.dtype)
    print(text)
    if args.output:
        args.output.write_text(text)
    return 0


def run_cases(
    per_rank: int,
    document: int,
    worlds: Sequence[int],
    kv_heads: int = HEADS,
    dtype: str = "float32",
) -> list[dict]:
    """The worst rank of every case: the one-process baseline first, then Ulysses and ring
    at each world size."""
    rows = [run_case("single", 1, per_rank, document, kv_heads, dtype)]
    rows += [
        run_case(mode, w, per_rank, document, kv_heads, dtype)
        for w in worlds
        for mode in ("ulysses", "ring")
    ]
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
