"""benchmarks/rank_results: a torchrun'd child's per-rank results travel as files, so ranks that
finish together under PYTHONUNBUFFERED (stdout lines interleaved) cannot lose one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import rank_results

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_every_rank_is_read_back_by_rank(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(rank_results.ENV, str(tmp_path))
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        rank_results.write({"rank": rank, "peak": 10.0 + rank})
    assert rank_results.read(tmp_path, 2) == [{"rank": 0, "peak": 10.0}, {"rank": 1, "peak": 11.0}]
    assert not list(tmp_path.glob(".*.partial"))


@pytest.mark.parametrize(
    ("world", "returncode", "stdout", "stderr", "expected"),
    [
        # rank 1 never wrote: named, with the exit code and what rank 0 printed
        (2, 0, "rank 0 said this", "", r"rank-1\.json \(exit 0\)\nstdout:\nrank 0 said this"),
        # every file is there but the launch failed: still an error, with its stderr
        (1, 1, "", "Traceback: boom", r"(?s)exit 1.*Traceback: boom"),
    ],
)
def test_a_failed_case_says_which_rank_and_shows_both_streams(
    tmp_path, monkeypatch, world, returncode, stdout, stderr, expected
) -> None:
    monkeypatch.setenv(rank_results.ENV, str(tmp_path))
    monkeypatch.setenv("RANK", "0")
    rank_results.write({"rank": 0})
    done = subprocess.CompletedProcess(["x"], returncode, stdout, stderr)
    with pytest.raises(RuntimeError, match=expected):
        rank_results.read(tmp_path, world, done)


@pytest.mark.slow
def test_two_gloo_ranks_that_finish_together_unbuffered_both_report() -> None:
    """The CI failure itself: Ulysses x 2 under PYTHONUNBUFFERED=1, several times."""

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    code = (
        "from benchmarks import attention_memory as am\n"
        "for _ in range(3): assert am.run_case('ulysses', 2, 256, 128)['world'] == 2\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
