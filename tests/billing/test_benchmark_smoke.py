"""benchmarks/billing_outbox.py at --quick sizes: it runs, every event reaches the server
once, and the report holds its table and the reproduce command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_billing_outbox_benchmark_quick(tmp_path):
    env_free = {k: v for k, v in __import__("os").environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "billing_outbox.py"),
            "--quick",
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env_free,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "billing_outbox.md").read_text()
    assert "| events at the server / ledger rows x 2 | 4,000 / 4,000 |" in report
    assert "events/s" in report and "lag insert -> accepted, p50" in report
    assert "Reproduce: `python benchmarks/billing_outbox.py --quick`" in report
