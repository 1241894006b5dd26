"""Per-rank memory and step time of a sequence-parallel training step vs the single-process step.

WHY: sequence parallelism (gpu_runtime/sequence_parallel.py) exists to cut what one rank holds
for a long row: with N ranks every per-token activation (checkpointed hidden states, one
layer's recompute, the tiled MLP, the chunked loss, attention's q/k/v) covers L/N tokens. This
script measures that, against the single-process LongTune step of train_memory.py in the same
run: same saved model (train_memory's ModelSpec: Llama 4×512, vocab 32000, fp32, LoRA r=8),
same row, same RoPE extension, the trainer's own build_model → CausalLMObjective → train_step.

Each (world size, mode, length) runs in FRESH processes: world 1 is a plain `python` child (no
process group: the real single-process step); world N is `torchrun --nproc_per_node N` and
every rank reports its own peak RSS (ru_maxrss) and its RSS with the model loaded (baseline),
so delta = peak − baseline is what the step itself needed ON THAT RANK. The figure the issue
asks for is delta(N) / delta(1), target ≈ 1/N; the losses must agree to 1e-5.

Threads: the machine's CPU threads are shared out, `threads // N` per rank (at least 1), so the
step times compare the same total CPU (and, for N above the core count, oversubscribe it).

Run:  python benchmarks/sequence_parallel.py            (8K and 16K, worlds 1/2/4)
      python benchmarks/sequence_parallel.py --quick    (seconds; smoke-test sizes)
      python benchmarks/sequence_parallel.py --lengths 32768 65536 --worlds 2 \
          --modes ulysses --document-tokens 4096 --output-name sequence_parallel_long
                                                        (32K/64K: results/sequence_parallel_long.md)

Each row also carries the memory planner's prediction for that layout (the planner's
predicted-vs-measured check at 32K/64K, per rank, for sequence-parallel layouts too).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # allow `python benchmarks/sequence_parallel.py`
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import rank_results  # noqa: E402
from benchmarks.train_memory import (  # noqa: E402  (after the sys.path line above)
    DEFAULT_CACHE_DIR,
    DEFAULT_RESULTS_DIR,
    MB,
    ModelSpec,
    child_environment,
    ensure_base_model,
    peak_rss_mb,
    settled_rss_mb,
)
from benchmarks.train_memory import BenchmarkConfig as TrainMemoryConfig  # noqa: E402

LOSS_PHASES = ("forward: loss", "backward: loss")  # PhasePeaks' names for the chunked loss
LOSS_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Case:
    world: int
    mode: str  # "none" (world 1), "ulysses", "ring"
    tokens: int

    @property
    def label(self) -> str:
        return "single process" if self.world == 1 else f"{self.mode} × {self.world}"


@dataclass(frozen=True)
class BenchmarkConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    # Sized for the shared 2-core machine this was measured on (README: ~25 min there); the
    # issue's 16K/32K/64K are `--lengths 16384 32768 65536 --ring-up-to 65536 --four-up-to
    # 65536` on a machine with the cores for it.
    lengths: tuple[int, ...] = (8192, 16384)
    worlds: tuple[int, ...] = (1, 2, 4)
    modes: tuple[str, ...] = ("ulysses", "ring")
    ring_up_to: int = 8192  # ring runs up to this length only (time)
    four_up_to: int = 8192  # world 4 oversubscribes 2 cores: up to this length only
    loss_chunk_size: int = 1024
    mlp_chunk_size: int = 2048
    threads: int = 2
    seed: int = 0
    kill_above_mb: float = 16 * 1024  # all ranks together (the machine is shared)
    malloc_mmap_threshold: int = 128 * 1024  # as train_memory.py (its comment says why)
    # None: one document fills the row (causal attention over all L tokens, O(L²) time).
    # N: the row packs documents of N tokens (position ids restart every N): the same
    # per-token memory (the per-document kernel never builds [L × L] either way) at a step
    # time linear in L, which is what makes 32K/64K measurable on 2 shared cores.
    document_tokens: int | None = None

    def cases(self) -> list[Case]:
        found = []
        for tokens in self.lengths:
            for world in self.worlds:
                if world == 1:
                    found.append(Case(1, "none", tokens))
                    continue
                if world >= 4 and tokens > self.four_up_to:
                    continue
                for mode in self.modes:
                    if mode == "ring" and tokens > self.ring_up_to:
                        continue
                    found.append(Case(world, mode, tokens))
        return found

    def train_memory_config(self) -> TrainMemoryConfig:
        """The train_memory.py config whose saved model this benchmark loads."""
        return TrainMemoryConfig(
            model=self.model, seed=self.seed, malloc_mmap_threshold=self.malloc_mmap_threshold
        )


def quick_config() -> BenchmarkConfig:
    return BenchmarkConfig(
        model=ModelSpec(layers=1, hidden=64, mlp=128, heads=4, original_context=512),
        lengths=(1024,),
        worlds=(1, 2),
        ring_up_to=1024,
        loss_chunk_size=128,
        mlp_chunk_size=256,
        kill_above_mb=6 * 1024,
    )


# --------------------------------------------------------------------------- child: one rank
def _status_kb(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field_name}")


class PhasePeaks:
    """Peak RSS of each phase of one step, exactly (no sampling).

    WHY: ru_maxrss says how much a rank needed, not what for; attributing the part that does
    not shrink with N (issue 16: x4 held 0.52 of the single process, not 0.25) needs the
    peak of every phase. At each phase change this reads the kernel's high-water mark
    (VmHWM, the peak since the last reset) into the phase that ends and resets it to the
    current RSS (``echo 5 > /proc/self/clear_refs``), so each phase's peak is the true peak
    of its own allocations on top of what was live when it began. Side effect: the process's
    ru_maxrss is reset too, so the step's peak is the max over the phases (`peak_mb`).
    """

    def __init__(self) -> None:
        self.phase: str | None = None
        self.peak_kb: dict[str, int] = {}
        self.entry_kb: dict[str, int] = {}  # RSS when the phase first began
        self.available = os.access("/proc/self/clear_refs", os.W_OK)

    def enter(self, name: str) -> None:
        if not self.available or name == self.phase:
            return
        self._close()
        self.entry_kb.setdefault(name, _status_kb("VmRSS"))
        self.phase = name

    def _close(self) -> None:
        if self.phase is not None:
            high = _status_kb("VmHWM")
            self.peak_kb[self.phase] = max(self.peak_kb.get(self.phase, 0), high)
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")

    def finish(self) -> dict[str, dict[str, float]]:
        """{phase: {"peak_mb", "entry_mb"}} in the order the phases first began."""
        if not self.available:
            return {}
        self._close()
        self.phase = None
        return {
            name: {"peak_mb": self.peak_kb[name] / 1024, "entry_mb": self.entry_kb[name] / 1024}
            for name in self.entry_kb
        }


def instrument(objective, optimizer, phases: PhasePeaks) -> None:
    """Hooks that move `phases` along one training step: the decoder's forward, the loss
    (between the decoder's output and the objective's), the loss's backward (from the
    objective's output gradient until the decoder output's gradient arrives), each decoder
    layer's recompute + backward (its forward pre-hook while in backward), the optimizer."""
    decoder = objective.causal_lm.get_decoder()
    state = {"backward": False}

    def start_forward(*_):
        state["backward"] = False
        phases.enter("forward: decoder")

    def decoder_done(_module, _args, output):
        phases.enter("forward: loss")
        hidden = output.last_hidden_state
        if hidden.requires_grad:
            hidden.register_hook(lambda grad: phases.enter("backward: layers") or None)

    def objective_done(_module, _args, output):
        if output.requires_grad:

            def backward_starts(grad):
                state["backward"] = True
                phases.enter("backward: loss")

            output.register_hook(backward_starts)

    def layer_starts(index: int):
        def hook(*_):
            if state["backward"]:
                phases.enter(f"backward: layer {index}")

        return hook

    objective.register_forward_pre_hook(start_forward)
    decoder.register_forward_hook(decoder_done)
    objective.register_forward_hook(objective_done)
    for index, layer in enumerate(decoder.layers):
        layer.register_forward_pre_hook(layer_starts(index))
    optimizer.register_step_pre_hook(lambda *_: phases.enter("optimizer + reductions"))


def rank_step(case: Case, config: BenchmarkConfig, model_dir: Path) -> dict:
    """One training step of one packed row (one document filling it, or documents of
    ``config.document_tokens``) on this rank."""
    import torch

    from gpu_runtime import train as trainer
    from gpu_runtime.contract import TrainConfig
    from gpu_runtime.distributed import barrier, init_distributed, shutdown, wrap_for_training
    from gpu_runtime.sequence_parallel import (
        enable_sequence_parallel,
        init_sequence_layout,
    )

    ctx = init_distributed()
    torch.set_num_threads(max(1, config.threads // ctx.world_size))
    generator = torch.Generator().manual_seed(config.seed)
    input_ids = torch.randint(config.model.vocab, (1, case.tokens), generator=generator)
    train_config = TrainConfig(
        base_model=str(model_dir),
        output_dir=str(model_dir / "unused-output"),
        context_length=case.tokens,
        lora_r=config.model.lora_r,
        lora_alpha=2 * config.model.lora_r,
        lora_dropout=0.0,
        activation_checkpointing=True,
        loss_chunk_size=config.loss_chunk_size,
        mlp_chunk_size=config.mlp_chunk_size,
        dtype="float32",
        sequence_parallel=ctx.world_size,
        sequence_parallel_mode="auto" if case.mode == "none" else case.mode,
    )
    layout = init_sequence_layout(ctx, train_config.sequence_parallel)
    model = trainer.build_model(train_config, ctx.device, torch.float32)
    causal_lm = trainer.causal_lm_of(model)
    layout = enable_sequence_parallel(causal_lm, layout, train_config.sequence_parallel_mode)
    objective = trainer.CausalLMObjective(causal_lm, train_config.loss_chunk_size)
    wrapped = wrap_for_training(objective, ctx, method="lora", compute_dtype=torch.float32)
    optimizer = trainer.build_optimizer(objective, train_config)
    wrapped.train()
    positions = torch.arange(case.tokens)
    if config.document_tokens:
        positions = positions % config.document_tokens  # a new document every N tokens
    batch = {
        "input_ids": input_ids,  # [1, N], the whole row on every rank; train_step slices it
        "position_ids": positions[None],
        "labels": input_ids,
    }
    phases = PhasePeaks()
    instrument(objective, optimizer, phases)
    baseline = settled_rss_mb()
    loading_peak = peak_rss_mb()  # before the phases reset the high-water mark
    phases.enter("step setup")  # from here every byte the step takes lands in some phase
    started = time.perf_counter()
    outcome = trainer.train_step(
        wrapped, [batch], optimizer, train_config, ctx, torch.float32, layout
    )
    seconds = time.perf_counter() - started
    phases.enter("after the step")
    by_phase = phases.finish()
    result = {
        "rank": ctx.rank,
        "world": ctx.world_size,
        "mode": layout.mode if layout.enabled else "none",
        "tokens": case.tokens,
        "baseline_mb": baseline,
        # ru_maxrss over the whole process as before: the clear_refs resets make it the max
        # of the peak before the step (loading) and every phase's high-water mark
        "peak_mb": max([loading_peak, peak_rss_mb(), *(p["peak_mb"] for p in by_phase.values())]),
        "phases": by_phase,
        "seconds": seconds,
        "loss": outcome.loss,
        "attn_implementation": causal_lm.config._attn_implementation,
    }
    barrier(ctx)  # leave together (gpu_runtime.distributed.shutdown says why)
    shutdown(ctx)
    return result


# --------------------------------------------------------------------------- parent
@dataclass
class Measurement:
    case: Case
    ranks: list[dict] = field(default_factory=list)
    skipped: str | None = None

    def _values(self, key: str) -> list[float]:
        return [r[key] for r in self.ranks]

    @property
    def peak_mb(self) -> float | None:  # the worst rank
        return max(self._values("peak_mb")) if self.ranks else None

    @property
    def delta_mb(self) -> float | None:  # the worst rank's step memory
        return max(r["peak_mb"] - r["baseline_mb"] for r in self.ranks) if self.ranks else None

    @property
    def baseline_mb(self) -> float | None:
        return max(self._values("baseline_mb")) if self.ranks else None

    @property
    def seconds(self) -> float | None:
        return max(self._values("seconds")) if self.ranks else None

    @property
    def loss(self) -> float | None:
        return self.ranks[0]["loss"] if self.ranks else None

    @property
    def has_phases(self) -> bool:
        return bool(self.ranks) and all(r.get("phases") for r in self.ranks)

    @property
    def loss_transient_mb(self) -> float | None:
        """The worst rank's loss-chunk transient: the most the chunked loss's forward or
        backward rose above what was live when it began (one [chunk × vocab] fp32 logits
        block, whose log-sum-exp / softmax gpu_runtime.loss takes in place, the GEMM's
        workspace; in backward also the [tokens × hidden] gradient of the hidden states).
        Measured per phase, not assumed."""
        if not self.has_phases:
            return None
        return max(
            phase["peak_mb"] - phase["entry_mb"]
            for r in self.ranks
            for name, phase in r["phases"].items()
            if name in LOSS_PHASES
        )

    @property
    def activation_delta_mb(self) -> float | None:
        """The worst rank's delta with the loss-chunk transient left out: the highest of
        every other phase's peak and of the RSS each loss phase began with, minus the
        baseline. What the step holds for its tokens (checkpoints, one layer's recompute,
        attention's buffers), which is what sequence parallelism divides."""
        if not self.has_phases:
            return None
        return max(
            max(
                phase["entry_mb"] if name in LOSS_PHASES else phase["peak_mb"]
                for name, phase in r["phases"].items()
            )
            - r["baseline_mb"]
            for r in self.ranks
        )

    @property
    def peak_phase(self) -> str | None:
        """Where the worst rank peaked ("backward: layer 3" → "layer")."""
        if not self.has_phases:
            return None
        worst = max(self.ranks, key=lambda r: r["peak_mb"])
        name = max(worst["phases"], key=lambda n: worst["phases"][n]["peak_mb"])
        return "loss" if name in LOSS_PHASES else ("layer" if "layer" in name else name)


def tree_rss_mb(pid: int) -> float:
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / MB


def command_for(case: Case, config: BenchmarkConfig, model_dir: Path) -> list[str]:
    spec = json.dumps(dataclasses.asdict(config))
    child = [str(Path(__file__).resolve()), "--child", json.dumps(dataclasses.asdict(case))]
    child += [spec, str(model_dir)]
    if case.world == 1:
        return [sys.executable, *child]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launcher, "--nproc_per_node", str(case.world), *child]


def measure(case: Case, config: BenchmarkConfig, model_dir: Path) -> Measurement:
    """Run one case in fresh processes; kill the whole tree if its RSS passes the cap."""
    env = child_environment(config.train_memory_config())
    env["OMP_NUM_THREADS"] = str(max(1, config.threads // case.world))
    with tempfile.TemporaryFile(mode="w+") as stderr_file, tempfile.TemporaryDirectory() as out:
        env[rank_results.ENV] = out
        process = subprocess.Popen(
            command_for(case, config, model_dir),
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            text=True,
            start_new_session=True,  # one process group: the cap kills every rank
        )
        killed_at = None
        try:
            while process.poll() is None:
                rss = tree_rss_mb(process.pid)
                if rss > config.kill_above_mb:
                    killed_at = rss
                    os.killpg(process.pid, signal.SIGKILL)
                    break
                time.sleep(0.2)
            stdout, _ = process.communicate()
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        stderr_file.seek(0)
        stderr = stderr_file.read()
        if killed_at is not None:
            return Measurement(case, skipped=f"killed at {killed_at / 1024:.1f} GB RSS")
        done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        try:
            ranks = rank_results.read(Path(out), case.world, done)
        except RuntimeError as error:
            raise RuntimeError(f"{case} failed: {error}") from None
    return Measurement(case, sorted(ranks, key=lambda r: r["rank"]))


def run_all(
    config: BenchmarkConfig, model_dir: Path, log=print, on_result=None
) -> list[Measurement]:
    """Every case in turn; ``on_result(results so far)`` after each (the report is rewritten
    as cases finish, so a run stopped by a deadline keeps what it measured)."""
    results = []
    for case in config.cases():
        m = measure(case, config, model_dir)
        results.append(m)
        if on_result is not None:
            on_result(results)
        log(
            f"{case.label:16s} {case.tokens:6d} tokens: per-rank peak {fmt_mb(m.peak_mb)} "
            f"(delta {fmt_mb(m.delta_mb)}) in {fmt_s(m.seconds)}, loss {fmt_loss(m.loss)}"
            + (f" [{m.skipped}]" if m.skipped else "")
        )
    return results


# --------------------------------------------------------------------------- report
def fmt_mb(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} MB"


def fmt_s(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def fmt_loss(value: float | None) -> str:
    return "—" if value is None else f"{value:.6f}"


def single(results: Sequence[Measurement], tokens: int) -> Measurement | None:
    return next((m for m in results if m.case.world == 1 and m.case.tokens == tokens), None)


def activation_ratio(results: Sequence[Measurement], m: Measurement) -> float | None:
    """delta of the worst rank / delta of the single process, same length (target ≈ 1/N)."""
    base = single(results, m.case.tokens)
    if base is None or m.delta_mb is None or base.delta_mb is None or base.delta_mb <= 0:
        return None
    return m.delta_mb / base.delta_mb


def activation_only_ratio(results: Sequence[Measurement], m: Measurement) -> float | None:
    """`activation_delta_mb` of the worst rank / the single process's, same length: the
    per-rank delta ratio with the (measured) loss-chunk transient left out on both sides."""
    base = single(results, m.case.tokens)
    if base is None or m.activation_delta_mb is None or not base.activation_delta_mb:
        return None
    return m.activation_delta_mb / base.activation_delta_mb


def loss_gap(results: Sequence[Measurement], m: Measurement) -> float | None:
    base = single(results, m.case.tokens)
    if base is None or m.loss is None or base.loss is None:
        return None
    return abs(m.loss - base.loss)


def per_token_ratio(results: Sequence[Measurement], m: Measurement) -> float | None:
    """Slope of delta over length for m's layout / the single process's slope, between the
    two longest lengths both measured (target 1/N). Why: delta = fixed + per-token part, and
    the fixed part (the loss chunk's [chunk × vocab] logits and their gradient, optimizer and
    process-group buffers) does not depend on L, so it cannot shrink with N either; the
    per-token part is what sequence parallelism divides."""

    def deltas(world: int, mode: str) -> dict[int, float]:
        return {
            x.case.tokens: x.delta_mb
            for x in results
            if x.case.world == world and x.case.mode == mode and x.delta_mb is not None
        }

    mine, base = deltas(m.case.world, m.case.mode), deltas(1, "none")
    common = sorted(set(mine) & set(base))
    if len(common) < 2:
        return None
    short, long = common[-2], common[-1]
    base_slope = (base[long] - base[short]) / (long - short)
    if base_slope <= 0:
        return None
    return (mine[long] - mine[short]) / (long - short) / base_slope


def predicted_peak_mb(case: Case, config: BenchmarkConfig) -> float:
    """The memory planner's per-rank peak for this case's step (its layout on the ``cpu``
    accelerator): what job creation would plan with."""
    return _planner_estimate(case, config).peak_bytes / MB


def predicted_peak_phase(case: Case, config: BenchmarkConfig) -> str:
    """Where the planner puts this case's peak: "loss" or "layer"."""
    return _planner_estimate(case, config).peak_phase


def _planner_estimate(case: Case, config: BenchmarkConfig):
    from benchmarks.memory_planner import planner_shape
    from gpu_runtime import memory_planner as mp

    setup = mp.TrainingSetup(
        context_length=case.tokens,
        lora_r=config.model.lora_r,
        lora_dropout=0.0,
        compute_dtype="float32",
    )
    layout = mp.Layout(
        sequence_parallel=case.world,
        sequence_parallel_mode="ulysses" if case.mode == "none" else case.mode,
        activation_checkpointing=True,
        mlp_chunk_size=config.mlp_chunk_size,
        loss_chunk_size=config.loss_chunk_size,
    )
    return mp.estimate(planner_shape(config.model), setup, layout, mp.cpu_accelerator(64 * mp.GIB))


def planner_error(m: Measurement, config: BenchmarkConfig) -> float | None:
    if m.peak_mb is None:
        return None
    return predicted_peak_mb(m.case, config) / m.peak_mb - 1


PLANNER_TOLERANCE = 0.15


def results_table(results: Sequence[Measurement], config: BenchmarkConfig) -> str:
    rows = [
        "| tokens | layout | ranks | per-rank peak | per-rank baseline | per-rank delta "
        "| delta / single delta | 1/N | step | |loss − single| | planner's peak | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in results:
        ratio = activation_ratio(results, m)
        gap = loss_gap(results, m)
        error = planner_error(m, config)
        rows.append(
            f"| {m.case.tokens:,} | {m.case.label} | {m.case.world} "
            f"| {m.skipped or fmt_mb(m.peak_mb)} | {fmt_mb(m.baseline_mb)} | {fmt_mb(m.delta_mb)} "
            f"| {'—' if ratio is None else f'{ratio:.2f}'} | {1 / m.case.world:.2f} "
            f"| {fmt_s(m.seconds)} | {'—' if gap is None else f'{gap:.1e}'} "
            f"| {fmt_mb(predicted_peak_mb(m.case, config))} "
            f"| {'—' if error is None else f'{error:+.1%}'} |"
        )
    return "\n".join(rows)


def attribution_table(results: Sequence[Measurement], config: BenchmarkConfig) -> list[str]:
    """Where each case's per-rank delta goes (rows with per-phase peaks only)."""
    measured = [m for m in results if m.has_phases]
    if not measured:
        return []
    rows = [
        "### Where the per-rank delta goes",
        "",
        "Per-phase peaks of every rank (`PhasePeaks`: the kernel's RSS high-water mark read and "
        "reset at each phase change; worst rank shown). Loss-chunk transient = the most the "
        "chunked loss (forward or backward) rose above what was live when it began: one "
        f"[{config.loss_chunk_size} × {config.model.vocab}] fp32 logits block, its "
        "log-sum-exp and softmax taken in place (and the GEMM's workspace, and in backward the "
        "hidden states' gradient), a cost each rank pays whatever N is. Delta without it = "
        "the highest of every other phase's peak and of the RSS each loss phase began with, "
        "minus the baseline: what the step holds for its tokens. Peak phase: where the worst "
        "rank peaked "
        "(loss chunk, or one layer's recompute + backward), and where the planner puts it.",
        "",
        "| tokens | layout | per-rank delta | loss-chunk transient | delta without it "
        "| ratio to single (raw) | ratio to single (without the transient) | 1/N "
        "| peak phase: measured / planner |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in measured:
        raw, act = activation_ratio(results, m), activation_only_ratio(results, m)
        rows.append(
            f"| {m.case.tokens:,} | {m.case.label} | {fmt_mb(m.delta_mb)} "
            f"| {fmt_mb(m.loss_transient_mb)} | {fmt_mb(m.activation_delta_mb)} "
            f"| {'—' if raw is None else f'{raw:.2f}'} | {'—' if act is None else f'{act:.2f}'} "
            f"| {1 / m.case.world:.2f} | {m.peak_phase} / {predicted_peak_phase(m.case, config)} |"
        )
    return [*rows, ""]


def planner_verdict(results: Sequence[Measurement], config: BenchmarkConfig) -> list[str]:
    errors = [(m, e) for m in results if (e := planner_error(m, config)) is not None]
    if not errors:
        return []
    worst, error = max(errors, key=lambda item: abs(item[1]))
    met = "MET" if abs(error) <= PLANNER_TOLERANCE else "NOT MET"
    return [
        f"- Memory planner within ±{PLANNER_TOLERANCE:.0%} of the measured per-rank peak: "
        f"worst {error:+.1%} ({worst.case.label} at {worst.case.tokens:,}) → {met}"
    ]


def verdict_lines(results: Sequence[Measurement]) -> list[str]:
    lines = []
    gaps = [g for m in results if m.case.world > 1 and (g := loss_gap(results, m)) is not None]
    if gaps:
        same = "MET" if max(gaps) < LOSS_TOLERANCE else "NOT MET"
        lines.append(f"- Same loss to {LOSS_TOLERANCE:g}: max gap {max(gaps):.1e} → {same}")
    reported = set()
    for m in results:
        slope = per_token_ratio(results, m)
        if m.case.world == 1 or slope is None or (m.case.world, m.case.mode) in reported:
            continue
        reported.add((m.case.world, m.case.mode))
        target = 1 / m.case.world
        met = "MET" if slope <= 1.25 * target else "NOT MET"
        lines.append(
            f"- {m.case.label}: per-token activation memory (slope of delta over length) "
            f"{slope:.2f} of the single process's (1/N = {target:.2f}; target ≤ "
            f"{1.25 * target:.2f}) → {met}"
        )
    for m in results:
        ratio = activation_ratio(results, m)
        if m.case.world == 1 or ratio is None:
            continue
        target = 1 / m.case.world
        # "≈ 1/N": within 1.5× of it (the loss chunk's [1024 × vocab] logits and the LoRA
        # state do not shrink with N; see the README).
        met = "MET" if ratio <= 1.5 * target else "NOT MET"
        line = (
            f"- {m.case.label} at {m.case.tokens:,}: per-rank delta {ratio:.2f} of the single "
            f"process (1/N = {target:.2f}; target ≤ {1.5 * target:.2f}) → {met}"
        )
        act = activation_only_ratio(results, m)
        if act is not None:
            act_met = "MET" if act <= 1.5 * target else "NOT MET"
            line += (
                f"; without the loss-chunk transient ({fmt_mb(m.loss_transient_mb)} on this "
                f"rank, {fmt_mb(single(results, m.case.tokens).loss_transient_mb)} in the "
                f"single process, measured) {act:.2f} → {act_met}"
            )
        lines.append(line)
    return lines


def render_argv(argv: Sequence[str]) -> list[str]:
    """The measuring command's arguments: without the re-rendering options (--report-only and
    --machine-load describe how the report was written, not how the steps ran)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--report-only":
            continue
        if arg == "--machine-load":
            skip = True
            continue
        if arg.startswith("--machine-load="):
            continue
        kept.append(arg)
    return kept


def reproduce_command(argv: Sequence[str]) -> str:
    return " ".join(["python benchmarks/sequence_parallel.py", *(shlex.quote(a) for a in argv)])


def markdown_report(
    results: Sequence[Measurement],
    config: BenchmarkConfig,
    argv: Sequence[str],
    total_s: float,
    machine_load: str | None = None,
) -> str:
    import torch

    m = config.model
    attn = sorted({r["attn_implementation"] for x in results for r in x.ranks})
    return "\n".join(
        [
            "# Sequence parallelism: per-rank memory and step time of one training step",
            "",
            f"Model (train_memory.py's): Llama {m.layers} layers, hidden {m.hidden}, MLP {m.mlp}, "
            f"{m.heads} heads, vocab {m.vocab}, fp32, LoRA r={m.lora_r} on all linear layers, one "
            "row per step, activation checkpointing, tiled MLP "
            f"({config.mlp_chunk_size}), chunked loss ({config.loss_chunk_size}). World 1 is the "
            "single-process LongTune step (no process group); world N runs under torchrun over "
            "gloo, LoRA under DDP, each rank holding L/N tokens. Peak = each rank's ru_maxrss; "
            "baseline = its RSS with the model loaded; delta = peak − baseline; the table shows "
            "the worst rank. Threads: "
            f"{config.threads} in all, {config.threads}//N per rank. Attention: {', '.join(attn)}. "
            + (
                f"Rows pack documents of {config.document_tokens:,} tokens (position ids "
                "restart; per-document attention)."
                if config.document_tokens
                else "One document fills each row."
            )
            + " Planner's peak = gpu_runtime.memory_planner.estimate of the same layout on "
            "the `cpu` accelerator (error = predicted / measured − 1).",
            "",
            results_table(results, config),
            "",
            *attribution_table(results, config),
            *verdict_lines(results),
            *planner_verdict(results, config),
            "",
            f"Total time: {total_s / 60:.1f} min (torch {torch.__version__}).",
            *(["", f"Machine load: {machine_load}"] if machine_load else []),
            "",
            f"Reproduce: `{reproduce_command(render_argv(argv))}`",
            "",
        ]
    )


# --------------------------------------------------------------------------- entry point
def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for the smoke test")
    parser.add_argument("--lengths", type=int, nargs="+", help="tokens (default 16384 32768)")
    parser.add_argument("--worlds", type=int, nargs="+", help="world sizes (default 1 2 4)")
    parser.add_argument("--modes", nargs="+", choices=["ulysses", "ring"])
    parser.add_argument("--ring-up-to", type=int, help="longest length ring runs at")
    parser.add_argument("--four-up-to", type=int, help="longest length world >= 4 runs at")
    parser.add_argument(
        "--document-tokens", type=int, help="pack documents of N tokens (default: one per row)"
    )
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_RESULTS_DIR)
    parser.add_argument(
        "--output-name", default="sequence_parallel", help="report file stem (.md and .json)"
    )
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="re-render <output-name>.md from the saved .json of an earlier run with the same "
        "arguments (no step re-run; the total time is read from the old report)",
    )
    parser.add_argument(
        "--machine-load", help="say in the report what load the steps ran under (uptime)"
    )
    return parser.parse_args(argv)


def load_results(path: Path) -> list[Measurement]:
    """The measurements a run saved (its .json)."""
    return [
        Measurement(Case(**item["case"]), item["ranks"], item.get("skipped"))
        for item in json.loads(path.read_text())
    ]


def _previous_total_s(report_path: Path) -> float:
    if report_path.is_file():
        for line in report_path.read_text().splitlines():
            if line.startswith("Total time: "):
                return float(line.split()[2]) * 60
    return 0.0


def run_benchmark(argv: Sequence[str]) -> tuple[list[Measurement], Path]:
    args = parse_args(argv)
    config = quick_config() if args.quick else BenchmarkConfig()
    if args.lengths:
        config = dataclasses.replace(config, lengths=tuple(sorted(args.lengths)))
    if args.worlds:
        config = dataclasses.replace(config, worlds=tuple(sorted({1, *args.worlds})))
    if args.modes:
        config = dataclasses.replace(config, modes=tuple(args.modes))
    if args.ring_up_to:
        config = dataclasses.replace(config, ring_up_to=args.ring_up_to)
    if args.four_up_to:
        config = dataclasses.replace(config, four_up_to=args.four_up_to)
    if args.document_tokens:
        config = dataclasses.replace(config, document_tokens=args.document_tokens)
    report_path = args.output_dir / f"{args.output_name}.md"
    if args.report_only:
        results = load_results(args.output_dir / f"{args.output_name}.json")
        total_s = _previous_total_s(report_path)
        report = markdown_report(results, config, argv, total_s, args.machine_load)
        if len(results) < len(config.cases()):
            report += f"\nPartial: {len(results)} of {len(config.cases())} cases.\n"
        report_path.write_text(report)
        print(report)
        return results, report_path
    started = time.perf_counter()
    model_dir = ensure_base_model(config.train_memory_config(), args.cache_dir)
    args.output_dir.mkdir(parents=True, exist_ok=True)

    def write(results: Sequence[Measurement]) -> str:
        report = markdown_report(
            results, config, argv, time.perf_counter() - started, args.machine_load
        )
        if len(results) < len(config.cases()):
            report += f"\nPartial: {len(results)} of {len(config.cases())} cases so far.\n"
        report_path.write_text(report)
        (args.output_dir / f"{args.output_name}.json").write_text(
            json.dumps(
                [
                    {"case": dataclasses.asdict(m.case), "ranks": m.ranks, "skipped": m.skipped}
                    for m in results
                ],
                indent=1,
            )
        )
        return report

    results = run_all(config, model_dir, log=lambda line: print(line, flush=True), on_result=write)
    print()
    print(write(results))
    return results, report_path


def config_from_json(spec: str) -> BenchmarkConfig:
    raw = json.loads(spec)
    tuples = {k: tuple(raw[k]) for k in ("lengths", "worlds", "modes")}
    return BenchmarkConfig(**{**raw, **tuples, "model": ModelSpec(**raw["model"])})


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "--child":
        case = Case(**json.loads(argv[1]))
        rank_results.write(rank_step(case, config_from_json(argv[2]), Path(argv[3])))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run_benchmark(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
