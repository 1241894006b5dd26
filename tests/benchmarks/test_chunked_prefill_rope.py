"""benchmarks/chunked_prefill_rope.py on a tiny model: both modes per arm and depth, the same
keys, a resumable record, and a report that reads what was measured."""

from __future__ import annotations

import json

import pytest

from benchmarks import chunked_prefill_rope as cpr
from gpu_runtime.tiny import build_tiny_model_dir
from tests.benchmarks.test_benchmarks_smoke import markdown_table


def test_every_arm_is_measured_in_one_forward_and_in_chunks_and_a_rerun_resumes(tmp_path):
    model_dir = build_tiny_model_dir(tmp_path / "tiny-64" / "model", max_position_embeddings=64)
    argv = ["--arms", "yarn", "dynamic", "--length", "160", "--target", "256", "--chunk", "64",
            "--depths", "0.5", "--samples", "2", "--dtype", "float32",
            "--model-dir", str(model_dir), "--output-dir", str(tmp_path / "out")]  # fmt: skip
    assert cpr.main(argv) == 0
    record = json.loads((tmp_path / "out" / "chunked_prefill_rope_float32.json").read_text())
    assert sorted(record["cells"]) == [
        "dynamic|64|0.5", "dynamic|whole|0.5", "yarn|64|0.5", "yarn|whole|0.5",
    ]  # fmt: skip
    assert all(cell["trials"] == 2 for cell in record["cells"].values())
    text = (tmp_path / "out" / "chunked_prefill_rope_float32.md").read_text()
    rows = {row[0]: row for row in markdown_table(text, "| arm |")}
    assert rows["dynamic"][1] == "yes" and rows["yarn"][1] == "no"
    assert "--output-dir" not in text and "--chunk 64" in text
    record["cells"]["yarn|64|0.5"]["accuracy"] = 0.25  # a resumed run re-reads, not re-measures
    (tmp_path / "out" / "chunked_prefill_rope_float32.json").write_text(json.dumps(record))
    assert cpr.main(argv) == 0
    resumed = json.loads((tmp_path / "out" / "chunked_prefill_rope_float32.json").read_text())
    assert cpr.pooled(resumed, "yarn", 64) == (0.25, (0.25 * 0.75 / 2) ** 0.5, 2)
    other = [*argv]
    other[other.index("--chunk") + 1] = "32"  # its cells would be keyed like the 64-token ones
    with pytest.raises(SystemExit, match="another setup.*'chunk': \\(64, 32\\)"):
        cpr.main(other)


def test_the_report_pools_depths_and_shows_the_cost_of_chunks():
    record = {
        "length": 16384, "target": 16384, "chunk": 512, "dtype": "bfloat16",
        "cells": {
            "dynamic+ft3@seed1|whole|0.1": {"accuracy": 1.0, "trials": 2},
            "dynamic+ft3@seed1|whole|0.9": {"accuracy": 1.0, "trials": 2},
            "dynamic+ft3@seed1|512|0.1": {"accuracy": 0.0, "trials": 2},
            "dynamic+ft3@seed1|512|0.9": {"accuracy": 0.5, "trials": 2},
        },
    }  # fmt: skip
    mean, se, n = cpr.pooled(record, "dynamic+ft3@seed1", 512)
    assert (mean, n) == (0.25, 4) and abs(se - (0.25 * 0.75 / 4) ** 0.5) < 1e-12
    row = markdown_table(cpr.markdown(record, "python x"), "| arm |")[0]
    assert row == ["dynamic+ft3@seed1", "yes", "1.00 ± 0.00 (n=4)", "0.25 ± 0.22 (n=4)", "-0.75"]
