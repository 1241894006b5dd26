"""Smoke tests for benchmarks/: each script's whole pipeline at --quick sizes.

The numbers at these sizes mean nothing; what is checked is that the pieces a reader relies
on are right: the passkey data really hides the key where it says, the verdict logic picks
the right winner and says MET/NOT MET correctly, the memory runs really use LongTune's
attention and checkpointing and compute the same loss as the plain step, a plain run predicted
over budget is skipped (not attempted), and the reports hold a well-formed table, the
charts and the reproduce command.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from benchmarks import context_extension as ce
from benchmarks import train_memory as tm

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def markdown_table(text: str, header_prefix: str) -> list[list[str]]:
    """Body rows (cells stripped) of the first table whose header starts with header_prefix."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_prefix))
    header_cells = len(lines[start].strip("|").split("|"))
    assert set(lines[start + 1].replace("|", "")) == {"-"}, "missing separator row"
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == header_cells, line
        rows.append(cells)
    return rows


def torch_global_state() -> tuple[torch.Tensor, int]:
    """What an in-process benchmark run must leave as it found it (the caller's RNG stream,
    its thread count): later tests in the same pytest process depend on both."""
    return torch.random.get_rng_state(), torch.get_num_threads()


def assert_torch_state_unchanged(before: tuple[torch.Tensor, int]) -> None:
    rng_state, threads = torch_global_state()
    assert torch.equal(rng_state, before[0]), "the benchmark reseeded the caller's global RNG"
    assert threads == before[1], "the benchmark changed the caller's torch thread count"


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert path.stat().st_size > 5_000, f"{path} looks empty"


# --------------------------------------------------------------------------- context extension
def test_passkey_batch_hides_the_key_at_the_requested_depth() -> None:
    task = ce.PasskeyTask()
    length, depth = 64, 0.5
    ids, labels = ce.passkey_batch(task, 4, length, torch.Generator().manual_seed(0), depth)

    start = round(depth * (length - 2 * task.block_len))
    assert (ids[:, start] == task.key_token).all()
    assert (ids[:, length - task.block_len] == task.query_token).all()
    key_digits = ids[:, start + 1 : start + 1 + task.num_digits]
    assert torch.equal(key_digits, ids[:, -task.num_digits :])  # the answer is the key
    assert ((key_digits >= 0) & (key_digits <= 9)).all()
    assert ((ids == task.key_token).sum(dim=1) == 1).all()
    assert ((ids == task.query_token).sum(dim=1) == 1).all()
    # loss only on the five answer digits
    assert (labels[:, : -task.num_digits] == ce.IGNORE_INDEX).all()
    assert torch.equal(labels[:, -task.num_digits :], ids[:, -task.num_digits :])


def test_random_depth_never_overlaps_the_query() -> None:
    task = ce.PasskeyTask()
    ids, _ = ce.passkey_batch(task, 256, 32, torch.Generator().manual_seed(1))
    key_positions = (ids == task.key_token).nonzero()[:, 1]  # [B]
    assert len(key_positions) == 256
    assert (key_positions + task.block_len <= 32 - task.block_len).all()
    assert key_positions.min() == 0 and key_positions.max() == 32 - 2 * task.block_len


def test_passkey_batch_rejects_a_sequence_too_short_for_key_and_query() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        ce.passkey_batch(ce.PasskeyTask(), 1, 11, torch.Generator())


def _arm_result(method: str, before: float, after: float | None, back: float | None):
    depths = ce.Evaluation().depths
    arm = next(a for a in ce.ALL_ARMS if a.method == method and a.fine_tune == (after is not None))
    return ce.ArmResult(
        arm=arm,
        short_before=0.8,
        long_before=before,
        long_before_by_depth=dict.fromkeys(depths, before),
        long_after=after,
        long_after_by_depth=None if after is None else dict.fromkeys(depths, after),
        short_after=back,
    )


def test_verdict_names_the_winner_and_checks_both_targets(monkeypatch) -> None:
    # The verdict logic, for a fixed default (the real default is whatever the last run chose).
    monkeypatch.setattr(ce, "DEFAULT_ROPE_METHOD", "yarn")
    config = ce.BenchmarkConfig()
    results = [
        _arm_result("none", 0.01, None, None),
        _arm_result("linear", 0.01, 0.17, 0.18),
        _arm_result("yarn", 0.64, 0.96, 0.88),
        _arm_result("ntk", 0.11, 0.96, 0.93),  # ties yarn at 4L, forgets less: wins
    ]
    assert ce.winner(results).arm.method == "ntk"
    text = "\n".join(ce.verdict_lines(results, config, ce.Targets()))
    assert "default method `yarn` ≥ 0.95 at 512 after 200 steps: 0.96 → MET" in text
    assert "extrapolation ≤ 0.20 at 512: 0.01 → MET" in text
    assert "Winner: **NTK (static theta)**" in text and "DISAGREES" in text

    results[2] = _arm_result("yarn", 0.64, 0.90, 0.88)
    results[0] = _arm_result("none", 0.30, None, None)
    results[3] = _arm_result("ntk", 0.11, 0.85, 0.93)
    text = "\n".join(ce.verdict_lines(results, config, ce.Targets()))
    assert "0.90 → NOT MET" in text and "0.30 → NOT MET" in text
    assert "Winner: **YaRN**" in text and "agrees with DEFAULT_ROPE_METHOD" in text


def test_base_cache_key_changes_with_every_base_hyperparameter() -> None:
    config = ce.BenchmarkConfig()
    keys = {
        ce.cache_key(config),
        ce.cache_key(dataclasses.replace(config, base=dataclasses.replace(config.base, lr=1e-3))),
        ce.cache_key(
            dataclasses.replace(config, model=dataclasses.replace(config.model, layers=2))
        ),
        ce.cache_key(
            dataclasses.replace(config, task=dataclasses.replace(config.task, num_digits=4))
        ),
    }
    assert len(keys) == 4
    # the extension budget does not touch the base weights: same key
    extension = dataclasses.replace(config.extension, steps=10)
    assert ce.cache_key(dataclasses.replace(config, extension=extension)) == ce.cache_key(config)


def test_context_extension_quick_run_writes_a_well_formed_report(tmp_path: Path) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["--quick", "--output-dir", str(out), "--cache-dir", str(cache)]
    before = torch_global_state()
    results, report_path = ce.run_benchmark(argv)  # --threads defaults to 1
    assert_torch_state_unchanged(before)
    config = ce.quick_config()

    assert [r.arm for r in results] == list(ce.ALL_ARMS)
    for r in results:
        assert set(r.long_before_by_depth) == set(config.evaluation.depths)
        fractions = [r.short_before, r.long_before, *r.long_before_by_depth.values()]
        if r.arm.fine_tune:
            assert r.long_after is not None and r.short_after is not None
            assert set(r.long_after_by_depth) == set(config.evaluation.depths)
            fractions += [r.long_after, r.short_after]
        else:
            assert r.long_after is None and r.short_after is None
        assert all(0.0 <= f <= 1.0 for f in fractions)

    text = report_path.read_text()
    rows = markdown_table(text, "| arm | method |")
    assert [row[0] for row in rows] == [a.name for a in ce.ALL_ARMS]
    for row, r in zip(rows, results, strict=True):
        assert row[3] == f"{r.long_before:.2f}"
        assert row[4] == ("—" if r.long_after is None else f"{r.long_after:.2f}")
    assert len(markdown_table(text, "| arm | depth")) == len(ce.ALL_ARMS)
    assert f"Target: default method `{ce.DEFAULT_ROPE_METHOD}`" in text and "Winner:" in text
    assert f"Reproduce: `python benchmarks/context_extension.py {' '.join(argv)}`" in text
    assert_png(out / "context_extension.png")
    assert_png(out / "context_extension_depth.png")

    # The base model is cached; a re-run (a subset of arms) reuses it and is deterministic.
    assert len(list(cache.glob("context_extension-base-*.pt"))) == 1
    again, again_path = ce.run_benchmark([*argv, "--arms", "extrapolation", "yarn"])
    assert "loaded from cache" in again_path.read_text()
    assert [r.arm.method for r in again] == ["none", "yarn"]
    assert again[0].long_before_by_depth == results[0].long_before_by_depth
    assert again[1].long_after_by_depth == results[-1].long_after_by_depth


# --------------------------------------------------------------------------- train memory
def test_building_the_base_model_leaves_the_callers_rng_alone(tmp_path: Path) -> None:
    before = torch_global_state()
    first = tm.ensure_base_model(tm.quick_config(), tmp_path / "a")
    assert_torch_state_unchanged(before)
    # still seeded: a second build elsewhere writes the same weights
    second = tm.ensure_base_model(tm.quick_config(), tmp_path / "b")
    weights = "model.safetensors"
    assert (first / weights).read_bytes() == (second / weights).read_bytes()


def test_peak_prediction_extrapolates_the_two_longest_runs() -> None:
    runs = [
        tm.Measurement(tm.PLAIN, 1000, peak_mb=900.0, baseline_mb=500.0),
        tm.Measurement(tm.PLAIN, 2000, peak_mb=1000.0, baseline_mb=500.0),
        tm.Measurement(tm.PLAIN, 4000, peak_mb=3000.0, baseline_mb=500.0),
    ]
    assert tm.predict_peak_mb(runs, 8000) == pytest.approx(7000.0)
    assert tm.predict_peak_mb(runs[:1], 8000) is None


def test_plain_run_predicted_over_budget_is_skipped_not_attempted() -> None:
    config = dataclasses.replace(
        tm.quick_config(), lengths=(1024, 2048, 4096), plain_budget_mb=3000, target_ratio_at=2048
    )
    attempted: list[tuple[str, int]] = []

    def measure(arm: str, tokens: int) -> tm.Measurement:
        attempted.append((arm, tokens))
        per_token = 1.0 if arm == tm.PLAIN else 0.1  # MB per token over a 400 MB baseline
        return tm.Measurement(arm, tokens, peak_mb=400 + per_token * tokens, baseline_mb=400)

    results = tm.run_all(config, measure, log=lambda _: None)

    assert (tm.PLAIN, 4096) not in attempted and (tm.LONGTUNE, 4096) in attempted
    skipped = tm.lookup(results, tm.PLAIN, 4096)
    assert skipped.skipped == "not run: > 4 GB predicted" and skipped.peak_mb is None
    assert tm.peak_ratio(results, 4096) is None
    assert tm.peak_ratio(results, 2048) == pytest.approx((400 + 2048) / (400 + 204.8))
    assert tm.linearity(results, config) == pytest.approx(2.0)
    table = tm.results_table(results, config)
    rows = markdown_table(table, "| tokens |")
    assert [row[0] for row in rows] == ["1,024", "2,048", "4,096"]
    assert rows[2][1] == "not run: > 4 GB predicted" and rows[2][8] == "—"
    assert rows[1][8] == "4.0×"


@pytest.mark.slow
@pytest.mark.memory
def test_train_memory_quick_run_measures_both_arms_in_fresh_processes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--quick", "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")]
    before = torch_global_state()
    results, report_path = tm.run_benchmark(argv)
    assert_torch_state_unchanged(before)
    config = tm.quick_config()

    assert len(results) == 2 * len(config.lengths)
    for m in results:
        assert m.skipped is None
        assert m.peak_mb >= m.baseline_mb > 100  # a process with torch loaded
        assert m.delta_mb > 0 and m.seconds > 0 and m.loss > 0
        if m.arm == tm.LONGTUNE:
            assert m.attn_implementation == "longtune_varlen_sdpa"
            assert m.activation_checkpointing is True
        else:
            assert m.attn_implementation == "sdpa" and m.activation_checkpointing is False
    # Same weights, LoRA B = 0, same tokens: the two steps compute the same loss.
    assert tm.max_loss_gap(results) < tm.LOSS_TOLERANCE
    # The plain step's memory is dominated by [tokens x vocab] logits; LongTune never has them.
    short, long = config.lengths
    plain_short, plain_long = (tm.lookup(results, tm.PLAIN, n) for n in (short, long))
    assert plain_long.delta_mb > 1.3 * plain_short.delta_mb
    assert plain_long.delta_mb > 3 * tm.lookup(results, tm.LONGTUNE, long).delta_mb

    text = report_path.read_text()
    rows = markdown_table(text, "| tokens |")
    assert [row[0] for row in rows] == [f"{n:,}" for n in config.lengths]
    assert all(row[8].endswith("×") for row in rows)
    assert "Loss check:" in text and "same objective" in text
    assert f"Reproduce: `python benchmarks/train_memory.py {' '.join(argv)}`" in text
    assert_png(out / "train_memory.png")


# --------------------------------------------------------------------------- across base seeds


def _seed_run(seed: int, arms: dict[str, tuple[float, float | None]]) -> dict:
    """A context_extension.json: method -> (accuracy at 4L before FT, after FT)."""
    return {
        "base_seed": seed,
        "base_accuracy": 1.0,
        "trials": 100,
        "arms": [
            {"name": method, "method": "none" if method == "direct" else method,
             "fine_tune": after is not None, "short_before": 1.0, "long_before": before,
             "long_after": after, "short_after": None if after is None else 0.97,
             "long_final_by_depth": {}}
            for method, (before, after) in arms.items()
        ],
    }  # fmt: skip


def test_seed_aggregation_ties_after_fine_tuning_are_broken_by_zero_shot_accuracy():
    from benchmarks import context_extension_seeds as ces

    runs = [
        _seed_run(0, {"extrapolation": (0.50, None), "direct": (0.50, 0.95),
                      "linear": (0.0, 0.56), "ntk": (0.88, 0.99), "yarn": (0.94, 0.94)}),
        _seed_run(1, {"extrapolation": (0.00, None), "direct": (0.00, 0.96),
                      "linear": (0.0, 0.19), "ntk": (0.58, 0.93), "yarn": (0.96, 0.98)}),
    ]  # fmt: skip
    summaries = ces.summarize(runs)
    by_method = {s.method: s for s in summaries if s.fine_tune}
    assert by_method["ntk"].mean_after == pytest.approx(0.96)
    assert by_method["yarn"].mean_before == pytest.approx(0.95)
    winner, tied = ces.choose(summaries)
    # direct fine-tuning (0.955) is no scaling default; ntk 0.96 and yarn 0.96 tie; linear out
    assert {s.method for s in tied} == {"ntk", "yarn"}
    assert winner.method == "yarn"  # far better before fine-tuning
    text = ces.report(runs, ["--seeds", "0", "1"])
    assert "Winner by the stated rule: **yarn**" in text
    assert "extrapolation ≤ 0.20 (mean over seeds): 0.25 (0.50 / 0.00) → NOT MET" in text

    # control: outside the tie margin, accuracy after fine-tuning decides alone
    runs[1]["arms"][4]["long_after"] = 0.80  # yarn
    winner, tied = ces.choose(ces.summarize(runs))
    assert winner.method == "ntk" and [s.method for s in tied] == ["ntk"]


def test_sequence_parallel_report_sets_the_planner_beside_each_measured_rank() -> None:
    """The 32K/64K report: each row carries the planner's per-rank prediction of that layout
    and its error, and a partial run (a length without its single-process row) still renders."""
    from benchmarks import sequence_parallel as sp

    config = dataclasses.replace(sp.quick_config(), document_tokens=256)
    single = sp.Measurement(
        sp.Case(1, "none", 1024), [{"peak_mb": 900.0, "baseline_mb": 400.0, "seconds": 1.0,
                                    "loss": 5.0, "rank": 0}],
    )  # fmt: skip
    split = sp.Measurement(
        sp.Case(2, "ulysses", 1024),
        [{"peak_mb": 800.0 + r, "baseline_mb": 500.0, "seconds": 1.0, "loss": 5.0, "rank": r}
         for r in range(2)],
    )  # fmt: skip
    orphan = sp.Measurement(sp.Case(2, "ulysses", 2048), skipped="killed at 9.0 GB RSS")
    table = sp.results_table([single, split, orphan], config)
    predicted = sp.predicted_peak_mb(split.case, config)
    assert predicted != sp.predicted_peak_mb(single.case, config)  # the layout matters
    assert f"{predicted / 801.0 - 1:+.1%}" in table  # the worst rank's peak
    assert "killed at 9.0 GB RSS" in table
    (verdict,) = sp.planner_verdict([single, split], config)
    assert verdict.startswith("- Memory planner within ±15% of the measured per-rank peak")
