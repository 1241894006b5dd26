"""benchmarks/inference.py at --quick sizes: the report is well formed and its verdicts follow
the numbers (the numbers themselves mean nothing at this size)."""

from __future__ import annotations

from benchmarks import inference


def test_quick_run_writes_a_report_with_tables_and_command(tmp_path):
    out = tmp_path / "inference.md"
    report = inference.main(["--quick", "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert out.read_text() == report
    assert "Reproduce: `python benchmarks/inference.py --quick`" in report
    latency_rows = [
        line
        for line in report.splitlines()
        if line.startswith("| 128 ") or line.startswith("| 512 ")
    ]
    assert len(latency_rows) == 2
    assert "| engine, concurrency 4 (max decode batch 4) |" in report
    # The mixed-adapter table: the single-model batch and one row per adapter count.
    assert "| 4 | none (single model) |" in report
    assert "| 4 | 1 |" in report and "| 4 | 2 |" in report
    assert "Swap-in: 1 cold adapters" in report


def test_verdicts_follow_the_numbers():
    latency = [{"engine_ttft_s": 1.0, "generate_ttft_s": 1.0}]
    fast = {"engine_concurrent_tps": 250.0, "generate_sequential_tps": 100.0}
    assert inference.verdicts(latency, fast) == {"ttft": True, "throughput": True}
    slow_ttft = [{"engine_ttft_s": 1.2, "generate_ttft_s": 1.0}]
    slow = {"engine_concurrent_tps": 150.0, "generate_sequential_tps": 100.0}
    assert inference.verdicts(slow_ttft, slow) == {"ttft": False, "throughput": False}


def test_mixed_adapter_verdict_reads_the_16_adapter_rows():
    latency = [{"engine_ttft_s": 1.0, "generate_ttft_s": 1.0}]
    fast = {"engine_concurrent_tps": 250.0, "generate_sequential_tps": 100.0}
    mix = [
        {"adapters": 0, "vs_single_model": 1.0},
        {"adapters": 16, "vs_single_model": 0.85},
        {"adapters": 64, "vs_single_model": 0.1},  # not the target's row
    ]
    assert inference.verdicts(latency, fast, mix)["mixed_adapters"] is True
    mix.append({"adapters": 16, "vs_single_model": 0.79})  # another size misses it
    assert inference.verdicts(latency, fast, mix)["mixed_adapters"] is False


def test_profile_only_records_the_decode_forward_and_the_report_shows_it(tmp_path):
    """--profile-only writes the decode-forward profile as JSON (what the report's 'before' is
    recorded with); the full report has the same table, and the gathered arms add aten ops
    over the base forward."""
    import json

    record_path = tmp_path / "profile.json"
    cache = str(tmp_path / "cache")
    inference.main(["--quick", "--profile-only", str(record_path), "--cache-dir", cache])
    record = json.loads(record_path.read_text())
    assert record["commit"] and record["threads"] >= 1
    rows = {row["adapters"]: row for row in record["rows"]}
    assert sorted(rows) == [0, 1, 2] and {r["concurrency"] for r in rows.values()} == {4}
    assert all(rows[k]["aten_ops"] > rows[0]["aten_ops"] and rows[k]["added_ops"] for k in (1, 2))
    assert all(r["wall_ms"] > 0 and r["cpu_ms"] > 0 for r in rows.values())

    report = inference.main(["--quick", "--out", str(tmp_path / "r.md"), "--cache-dir", cache])
    assert "### One decode forward, 4 rows" in report
    assert all(f"| this run | {k} |" in report for k in ("none", "1", "2"))
    assert "Load average at the start / end:" in report
