"""benchmarks/gateway_load.py at --quick sizes: the fake replica speaks the replica protocol,
every request through the gateway and straight to the replica completes, and the report holds
both tables, the memory figures and the reproduce command."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.fixtures.services import REPO_ROOT

pytestmark = pytest.mark.slow


def test_quick_run_completes_every_request_and_writes_the_report(tmp_path):
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")
    }
    done = subprocess.run(
        [sys.executable, "benchmarks/gateway_load.py", "--quick", "--output-dir", str(tmp_path)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    text = (tmp_path / "gateway_load.md").read_text()
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.strip(" |").split("|")]
        for line in text.splitlines()
        if line.startswith("| ") and "---" not in line
    }
    for mode in ("direct, streaming", "gateway, streaming", "direct, non-streaming",
                 "gateway, non-streaming"):  # fmt: skip
        assert rows[mode][1:3] == ["10", "0"], rows[mode]  # 10 ok, 0 errors
    assert float(rows["gateway, streaming"][3]) > 0  # a TTFT was measured
    assert "streaming: time to first token" in rows
    assert "Gateway process RSS:" in text
    assert "Reproduce: `python benchmarks/gateway_load.py --concurrency 10 --rounds 1" in text
