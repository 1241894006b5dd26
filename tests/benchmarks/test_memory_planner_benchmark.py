"""Smoke tests for benchmarks/memory_planner.py: the accuracy table and its verdict, the
re-prediction from saved measurements, the on-paper tables, and (memory-marked) one real
quick run that measures fresh processes."""

from __future__ import annotations

import dataclasses
import json

import pytest

from benchmarks import memory_planner as bench
from benchmarks import train_memory as tm
from tests.benchmarks.test_benchmarks_smoke import markdown_table


def saved_measurements(path, peaks: dict[int, float]) -> None:
    path.write_text(
        json.dumps(
            {
                "provenance": "made up by the test",
                "model": {},
                "measurements": [
                    dataclasses.asdict(tm.Measurement(tm.LONGTUNE, t, peak_mb=p, baseline_mb=400.0))
                    for t, p in peaks.items()
                ],
            }
        )
    )


def test_reprediction_from_saved_measurements_and_the_verdict(tmp_path):
    config = tm.BenchmarkConfig()
    predicted = {t: bench.predict(config, t).peak_bytes / tm.MB for t in (4096, 8192, 16384)}
    # 8K measured 5% above the prediction, 16K 30% below it: the verdict must catch the 16K row
    peaks = {4096: predicted[4096], 8192: predicted[8192] / 1.05, 16384: predicted[16384] / 0.7}
    saved_measurements(tmp_path / "m.json", peaks)
    argv = ["--measured", str(tmp_path / "m.json"), "--output-dir", str(tmp_path / "out")]
    argv += ["--lengths", "4096", "8192", "16384", "65536"]
    rows, report_path = bench.run_benchmark(argv)
    assert [r.tokens for r in rows] == [4096, 8192, 16384, 65536]
    assert rows[1].error == pytest.approx(0.05) and rows[3].measured_mb is None
    text = report_path.read_text()
    table = markdown_table(text, "| tokens | measured peak")
    assert table[0][0] == "4,096 (calibration point)"
    assert table[3][1] == "not measured"
    assert "worst -30.0% at 16,384 tokens → NOT MET" in text
    assert "predicted only: 65,536" in text
    assert "reused from" in text and "they were made up by the test" in text
    assert f"Reproduce: `python benchmarks/memory_planner.py {' '.join(argv)}`" in text
    assert not (tmp_path / "out" / "memory_planner_measured.json").exists()  # nothing re-measured


def test_on_paper_tables_cite_and_compare_the_published_figures():
    table = markdown_table(bench.published_table(), "| published configuration")
    assert len(table) == len(bench.published_comparisons())
    for row in table:
        published, predicted = (int(cell.replace(",", "")) for cell in row[1:3])
        assert predicted > 0 and float(row[3]) == pytest.approx(predicted / published, abs=0.01)
        assert row[4].startswith("https://")
    plans = markdown_table(bench.plan_table(), "| model | method")
    assert len(plans) == 2 * 2 * 2 * 2  # models x methods x contexts x accelerators
    eight_b_lora = plans[0]
    assert eight_b_lora[:4] == ["Llama-3-8B", "lora", "150,000", "h100_80gb"]
    assert eight_b_lora[4].startswith("1× — 1 rank, activation checkpointing")


@pytest.mark.slow
@pytest.mark.memory
def test_quick_run_measures_fresh_processes(tmp_path):
    argv = ["--quick", "--output-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    rows, report_path = bench.run_benchmark(argv)
    assert all(r.measured_mb and r.measured_mb > r.predicted_mb * 0.3 for r in rows)
    saved = json.loads((tmp_path / "memory_planner_measured.json").read_text())
    assert {m["tokens"] for m in saved["measurements"]} == {r.tokens for r in rows}
    assert saved["provenance"].startswith(
        "measured by `python benchmarks/memory_planner.py --quick"
    )
    assert "measured in this run" in report_path.read_text()
