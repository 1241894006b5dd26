"""benchmarks/real_model_context.py without the model: the measuring order (every method at a
point before the next point, so a partial run still compares methods), resuming skips measured
cells, and the report's table and chart read what was measured."""

from __future__ import annotations

import json

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
        rmc.markdown(record, "python benchmarks/real_model_context.py"), "| target"
    )
    by_method = {r[1]: r for r in rows}
    assert by_method["yarn (default)"][2] == "16384: 0.50 ± 0.35 (n=2)"
    assert by_method["none"][2] == "16384: 0.00 ± 0.00 (n=1)"
    assert by_method["none"][3] == "16384: 42.50"
    assert_png(rmc.chart(record, tmp_path / "c.png"))
