"""benchmarks/dashboard_ttfb.py at --quick sizes: it builds the org, serves the pages with a
logged-in session and writes a well-formed table with a verdict per page."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.fixtures.services import REPO_ROOT

pytestmark = pytest.mark.slow


def test_quick_run_writes_the_table(tmp_path):
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")
    }
    subprocess.run(
        [sys.executable, "benchmarks/dashboard_ttfb.py", "--quick", "--output-dir", str(tmp_path)],
        cwd=REPO_ROOT, env=env, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    text = (tmp_path / "dashboard_ttfb.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| page |")
    pages = [row.split("|")[1].strip() for row in rows[1:]]
    assert pages[0].startswith("baseline") and "job page (1/10 of the events)" in pages
    assert all(row.rstrip(" |").endswith(("MET", "NOT MET")) for row in rows[1:])
    assert "Reproduce: `python benchmarks/dashboard_ttfb.py" in text
