"""benchmarks/real_model_context.py without the model: the measuring order (every method at a
point before the next point, so a partial run still compares methods), resuming skips measured
cells, and the report's table and chart read what was measured."""

from __future__ import annotations

import json

import pytest

from benchmarks import real_model_context as rmc
from tests.benchmarks.test_benchmarks_smoke import assert_png, markdown_table


def test_cells_are_measured_point_by_point_across_methods():
    plan = rmc.Plan(
        methods=("yarn", "none"),
        targets=(16384,),
        passkey={16384: ((16384, 2048), (0.5,))},
        perplexity={16384: (16384,)},
    )
    assert rmc.cells_in_order(plan) == [
        ("passkey", "yarn", 16384, 16384, 0.5),
        ("passkey", "none", 16384, 16384, 0.5),
        ("passkey", "yarn", 16384, 2048, 0.5),
        ("passkey", "none", 16384, 2048, 0.5),
        ("ppl", "yarn", 16384, 16384, None),
        ("ppl", "none", 16384, 16384, None),
    ]


def test_a_resumed_run_measures_nothing_already_measured(tmp_path, monkeypatch):
    plan = rmc.Plan(methods=("yarn",), targets=(16384,), passkey={16384: ((2048,), (0.5,))},
                    perplexity={})  # fmt: skip
    out = tmp_path / "r.json"
    key = rmc.cell_key("passkey", "yarn", 16384, 2048, 0.5)
    out.write_text(json.dumps({"cells": {key: {"accuracy": 1.0, "trials": 1, "seconds": 9}}}))
    monkeypatch.setattr(rmc, "load", lambda *a: (_ for _ in ()).throw(AssertionError("loaded")))
    record = rmc.run(plan, tmp_path, out)
    assert record["cells"][key]["accuracy"] == 1.0


def test_the_report_tabulates_means_and_standard_errors(tmp_path):
    cells = {
        rmc.cell_key("passkey", "yarn", 16384, 16384, 0.1): {"accuracy": 1.0, "trials": 1},
        rmc.cell_key("passkey", "yarn", 16384, 16384, 0.9): {"accuracy": 0.0, "trials": 1},
        rmc.cell_key("passkey", "none", 16384, 16384, 0.1): {"accuracy": 0.0, "trials": 1},
        rmc.cell_key("ppl", "none", 16384, 16384, None): {"perplexity": 42.5},
    }
    record = {"cells": cells, "plan": {"finetune_steps": 0}, "threads": 2}
    rows = markdown_table(
        rmc.markdown(record, ["python benchmarks/real_model_context.py"]), "| target"
    )
    by_method = {r[1]: r for r in rows}
    assert by_method["yarn (default)"][2] == "16384: 0.50 ± 0.35 (n=2)"
    assert by_method["none"][2] == "16384: 0.00 ± 0.00 (n=1)"
    assert by_method["none"][3] == "16384: 42.50"
    assert_png(rmc.chart(record, tmp_path / "c.png"))


def test_fine_tuned_arms_come_last_at_the_longest_passkey_length():
    plan = rmc.Plan(
        methods=("yarn", "linear"),
        targets=(16384,),
        passkey={16384: ((16384, 2048), (0.1, 0.9))},
        perplexity={16384: (16384,)},
        finetune_steps=3,
        finetune_methods=("linear",),
    )
    cells = rmc.cells_in_order(plan)
    assert cells[-3:] == [
        ("passkey", "linear+ft3", 16384, 16384, 0.1),
        ("passkey", "linear+ft3", 16384, 16384, 0.9),
        ("ppl", "linear+ft3", 16384, 16384, None),
    ]
    assert all("+ft" not in arm for _, arm, *_ in cells[:-3])
    assert rmc.split_label("linear+ft3") == ("linear", 3)
    assert rmc.split_label("yarn") == ("yarn", 0)


def _rows(cells: dict) -> list:
    return rmc.summarize({"cells": cells})


def test_the_verdict_follows_passkey_then_perplexity_and_ignores_fine_tunes():
    key = rmc.cell_key
    cells = {
        key("passkey", "yarn", 16384, 16384, 0.5): {"accuracy": 1.0, "trials": 1},
        key("passkey", "ntk", 16384, 16384, 0.5): {"accuracy": 1.0, "trials": 1},
        key("passkey", "none", 16384, 16384, 0.5): {"accuracy": 0.0, "trials": 1},
        key("passkey", "none+ft4", 16384, 16384, 0.5): {"accuracy": 1.0, "trials": 1},
        key("ppl", "yarn", 16384, 16384, None): {"perplexity": 9.0},
        key("ppl", "ntk", 16384, 16384, None): {"perplexity": 7.0},
        key("ppl", "none+ft4", 16384, 16384, None): {"perplexity": 3.0},
    }
    best, sentence = rmc.verdict(_rows(cells), 16384)
    # none's 0/1 is within noise of 1/1: all tied on passkey; perplexity decides (none has
    # none, so it cannot win), and the fine-tune is not a candidate
    assert best == ["ntk"]
    assert "DISAGREES" in sentence
    cells[key("ppl", "ntk", 16384, 16384, None)] = {"perplexity": 9.0}
    best, sentence = rmc.verdict(_rows(cells), 16384)
    assert best == ["ntk", "yarn"] and "agrees" in sentence
    cells[key("passkey", "linear", 16384, 2048, 0.5)] = {"accuracy": 1.0, "trials": 1}
    assert rmc.verdict(_rows(cells), 16384) is None  # linear has no cell at the target yet


def test_a_significant_passkey_difference_beats_perplexity():
    key = rmc.cell_key
    cells = {
        key("passkey", "yarn", 16384, 16384, 0.5): {"accuracy": 0.0, "trials": 10},
        key("passkey", "ntk", 16384, 16384, 0.5): {"accuracy": 1.0, "trials": 10},
        key("ppl", "yarn", 16384, 16384, None): {"perplexity": 5.0},
        key("ppl", "ntk", 16384, 16384, None): {"perplexity": 9.0},
    }
    best, sentence = rmc.verdict(_rows(cells), 16384)
    assert best == ["ntk"] and "DISAGREES" in sentence
    # one trial apart out of three is a tie: perplexity decides
    cells[key("passkey", "yarn", 16384, 16384, 0.5)] = {"accuracy": 2 / 3, "trials": 3}
    cells[key("passkey", "ntk", 16384, 16384, 0.5)] = {"accuracy": 1.0, "trials": 3}
    best, sentence = rmc.verdict(_rows(cells), 16384)
    assert best == ["yarn"] and "agrees" in sentence and "highest passkey accuracy ntk" in sentence


def test_the_fine_tuned_arms_get_their_own_verdict_by_the_same_rule(tmp_path):
    key = rmc.cell_key
    cells = {
        key("passkey", "yarn", 16384, 16384, 0.5): {"accuracy": 1.0, "trials": 6},
        key("ppl", "yarn", 16384, 16384, None): {"perplexity": 5.0},
        key("passkey", "linear", 16384, 16384, 0.5): {"accuracy": 0.0, "trials": 6},
        key("ppl", "linear", 16384, 16384, None): {"perplexity": 20.0},
        key("passkey", "yarn+ft3", 16384, 16384, 0.5): {"accuracy": 0.0, "trials": 6},
        key("ppl", "yarn+ft3", 16384, 16384, None): {"perplexity": 4.0},
        key("passkey", "ntk+ft3", 16384, 16384, 0.5): {"accuracy": 1.0, "trials": 6},
        key("ppl", "ntk+ft3", 16384, 16384, None): {"perplexity": 6.0},
    }
    rows = _rows(cells)
    best, sentence = rmc.verdict(rows, 16384)
    assert best == ["yarn"] and "agrees" in sentence  # the fine-tunes are not candidates here
    best, sentence = rmc.verdict(rows, 16384, steps=3)
    # 6/6 against 0/6 is significant: ntk's fine-tune wins despite yarn's lower perplexity
    assert best == ["ntk"] and "DISAGREES" in sentence
    assert sentence.startswith("After 3 LoRA steps at 16384 (fine-tuned: ntk, yarn; not fine-")
    assert "not fine-tuned: none, linear, dynamic" in sentence
    report = rmc.markdown({"cells": cells, "plan": {}, "threads": 2}, ["python x"])
    assert sentence in report and rmc.verdict(rows, 16384)[1] in report
    assert rmc.verdict(rows, 16384, steps=5) is None  # no arm fine-tuned for 5 steps
    cells[key("passkey", "linear+ft3", 16384, 2048, 0.5)] = {"accuracy": 1.0, "trials": 1}
    assert rmc.verdict(_rows(cells), 16384, steps=3) is None  # linear+ft3 lacks the target
    assert "Verdict after 3 LoRA steps at 16384: not every fine-tuned arm" in rmc.markdown(
        {"cells": cells, "plan": {}, "threads": 2}, ["python x"]
    )


def test_the_recorded_command_leaves_out_the_machine_local_output_dir():
    argv = ["--targets", "16384", "--output-dir", "/work/x", "--dtype", "bfloat16"]
    assert rmc.recorded_arguments(argv) == ["--targets", "16384", "--dtype", "bfloat16"]
    assert rmc.recorded_arguments(["--output-dir=/tmp/y", "--quick"]) == ["--quick"]
    old = "python benchmarks/real_model_context.py --dtype bfloat16 --output-dir /work/rmc"
    assert rmc.recorded_command(old) == "python benchmarks/real_model_context.py --dtype bfloat16"


def test_a_record_is_never_resumed_in_another_dtype(tmp_path, monkeypatch):
    """bf16 and fp32 cells of one arm are different measurements: one record per dtype, and
    resuming a record in the other dtype stops before loading anything."""
    plan = rmc.Plan(methods=("yarn",), targets=(16384,), passkey={16384: ((2048,), (0.5,))},
                    perplexity={}, dtype="bfloat16")  # fmt: skip
    out = tmp_path / "r.json"
    out.write_text(json.dumps({"cells": {}, "plan": {"dtype": "float32"}}))
    monkeypatch.setattr(rmc, "load", lambda *a: (_ for _ in ()).throw(AssertionError("loaded")))
    with pytest.raises(SystemExit, match="measured in float32, this run computes in bfloat16"):
        rmc.run(plan, tmp_path, out)
    assert rmc.record_name("float32") == "real_model_context"
    assert rmc.record_name("bfloat16") == "real_model_context_bfloat16"


def test_bfloat16_on_a_cpu_that_emulates_it_is_refused_before_any_work(tmp_path, monkeypatch):
    """An AVX2-only CPU multiplies bf16 ~6x slower than fp32: the run stops at the command
    line and says how to go on; float32 and a CPU with native bf16 are never refused."""
    assert rmc.emulated_bf16_refusal("float32", native_bf16=False) is None
    assert rmc.emulated_bf16_refusal("bfloat16", native_bf16=True) is None
    refusal = rmc.emulated_bf16_refusal("bfloat16", native_bf16=False)
    assert (
        refusal is not None and "--dtype float32" in refusal and "--allow-emulated-bf16" in refusal
    )
    monkeypatch.setattr(rmc, "emulated_bf16_refusal", lambda dtype: refusal)
    monkeypatch.setattr(rmc, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    with pytest.raises(SystemExit) as stopped:
        rmc.main(["--dtype", "bfloat16", "--output-dir", str(tmp_path)])
    assert stopped.value.code == 2 and not list(tmp_path.iterdir())


def test_a_seed_repeat_is_its_own_arm_trained_on_other_text(tmp_path, monkeypatch):
    """`--seed S` repeats a fine-tune arm as `<method>+ftN@seedS`: the plain name stays seed
    0's (older records read the same), and seed S trains on the S-th next stretch of text."""
    assert rmc.finetuned_label("ntk", 3) == "ntk+ft3"
    assert rmc.finetuned_label("ntk", 3, seed=2) == "ntk+ft3@seed2"
    assert rmc.split_label("ntk+ft3@seed2") == ("ntk", 3)
    assert (rmc.label_seed("ntk+ft3@seed2"), rmc.label_seed("ntk+ft3"), rmc.label_seed("ntk")) == (
        2,
        0,
        0,
    )
    plan = rmc.Plan(methods=("ntk",), targets=(16384,), passkey={16384: ((16384,), (0.5,))},
                    perplexity={16384: (8192,)}, finetune_steps=3, finetune_methods=("ntk",),
                    seed=2)  # fmt: skip
    assert rmc.cells_in_order(plan)[-2:] == [
        ("passkey", "ntk+ft3@seed2", 16384, 16384, 0.5),
        ("ppl", "ntk+ft3@seed2", 16384, 8192, None),
    ]
    seen = {}

    class Stop(Exception):
        pass

    def fake_data(tokenizer, target, rows, skip_tokens, path):
        seen.update(target=target, rows=rows, skip=skip_tokens)
        raise Stop

    import gpu_runtime.registry

    monkeypatch.setattr(gpu_runtime.registry, "load_tokenizer", lambda path: None)
    monkeypatch.setattr(rmc, "finetune_data", fake_data)
    with pytest.raises(Stop):
        rmc.finetune(tmp_path, "ntk", 16384, plan, 8192, tmp_path / "work")
    assert seen == {"target": 16384, "rows": 3, "skip": 8192 + 2 * 3 * 16384}


def test_seeds_are_pooled_and_only_a_measured_spread_ties_perplexities():
    key = rmc.cell_key
    cells = {}
    for seed, (yarn, ntk) in enumerate([(5.09, 5.07), (5.11, 5.08), (5.13, 5.12)]):
        for method, ppl, hits in (("yarn", yarn, 1.0), ("ntk", ntk, 0.5)):
            arm = rmc.finetuned_label(method, 3, seed)
            cells[key("passkey", arm, 16384, 16384, 0.5)] = {"accuracy": hits, "trials": 4}
            cells[key("ppl", arm, 16384, 16384, None)] = {"perplexity": ppl}
    pooled = {r["method"]: r for r in rmc.pooled_arms(_rows(cells), 16384, 3)}
    assert pooled["ntk"]["passkey"][0] == 0.5 and pooled["ntk"]["passkey"][2] == 12
    assert pooled["yarn"]["seeds"] == [0, 1, 2]
    assert rmc.mean_se([5.09, 5.11, 5.13]) == pytest.approx((5.11, 0.02 / 3**0.5))
    assert rmc.mean_se([5.0]) == (5.0, None)
    # 12/12 against 6/12 is significant: yarn is the only candidate whatever the perplexity
    best, sentence = rmc.verdict(_rows(cells), 16384, steps=3)
    assert best == ["yarn"] and "agrees" in sentence and "seeds 0, 1, 2 pooled" in sentence
    for seed in range(3):
        cells[key("passkey", rmc.finetuned_label("ntk", 3, seed), 16384, 16384, 0.5)] = {
            "accuracy": 1.0,
            "trials": 4,
        }
    # passkey tied; ntk's mean perplexity 5.090 is lower than yarn's 5.110, but the difference
    # (0.020) is within two standard errors of it over three seeds (0.038): both are best
    best, sentence = rmc.verdict(_rows(cells), 16384, steps=3)
    assert best == ["ntk", "yarn"] and "agrees" in sentence
    assert "lowest perplexity: ntk (5.090 ± 0.015, 3 seeds)" in sentence
    assert "within seed noise of it: yarn (5.110 ± 0.012, 3 seeds)" in sentence
    report = rmc.markdown({"cells": cells, "plan": {}, "threads": 2}, ["python x"])
    assert "Fine-tuned arms after 3 steps at 16384, seeds pooled: ntk (seeds 0, 1, 2)" in report
    # the same gap from a single seed each has no measured spread: the strict minimum wins
    one_seed = {k: v for k, v in cells.items() if "@seed" not in k}
    best, sentence = rmc.verdict(_rows(one_seed), 16384, steps=3)
    assert best == ["ntk"] and "DISAGREES" in sentence and "seed noise" not in sentence


def test_a_length_dependent_winner_is_reported_but_the_default_is_judged_among_the_others():
    key = rmc.cell_key
    cells = {}
    for seed in range(2):
        for method, hits, ppl in (("dynamic", 1.0, 5.10), ("yarn", 0.5, 5.20), ("ntk", 0.5, 5.0)):
            arm = rmc.finetuned_label(method, 3, seed)
            cells[key("passkey", arm, 16384, 16384, 0.5)] = {"accuracy": hits, "trials": 6}
            cells[key("ppl", arm, 16384, 16384, None)] = {"perplexity": ppl + 0.01 * seed}
    # 12/12 against 6/12: dynamic alone is best, but it cannot be the default; among the
    # others ntk (5.005) beats yarn (5.205) by far more than their seed spread
    best, sentence = rmc.verdict(_rows(cells), 16384, steps=3)
    assert best == ["ntk"] and "DISAGREES" in sentence
    assert "of those, lowest perplexity: dynamic (5.105 ± 0.005, 2 seeds)" in sentence
    assert "dynamic cannot be the default" in sentence
    assert "among the others: highest passkey accuracy ntk, yarn (0.50)" in sentence
    assert "of those, lowest perplexity: ntk (5.005 ± 0.005, 2 seeds)" in sentence
    # dynamic tied with yarn: yarn is the one the default may be, no second judgement
    for seed in range(2):
        arm = rmc.finetuned_label("yarn", 3, seed)
        cells[key("passkey", arm, 16384, 16384, 0.5)] = {"accuracy": 1.0, "trials": 6}
        cells[key("ppl", arm, 16384, 16384, None)] = {"perplexity": 5.10 + 0.01 * seed}
    best, sentence = rmc.verdict(_rows(cells), 16384, steps=3)
    assert best == ["yarn"] and "agrees" in sentence
    assert "dynamic cannot be the default" in sentence and "among the others" not in sentence
    report = rmc.markdown({"cells": cells, "plan": {}, "threads": 2}, ["python x"])
    assert "cannot be the default; if it alone is best" in report
