"""Per-rank results of a benchmark child launched by torchrun: one JSON file per rank.

WHY files and not stdout lines: every rank shares the launcher's stdout, and with
``PYTHONUNBUFFERED`` set (as CI runners often do) ``print`` writes a line and its newline in
two system calls, so two ranks that finish together interleave and a parent that parses
lines sees one result instead of two (seen in CI: "ulysses x 2 failed" with an empty
stderr). A file per rank, renamed into place, cannot mix.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ENV = "LONGTUNE_RANK_RESULTS_DIR"


def write(result: dict) -> None:
    """In a child: this rank's result, atomically, under the directory the parent named."""
    directory = Path(os.environ[ENV])
    rank = int(os.environ.get("RANK", "0"))
    partial = directory / f".rank-{rank}.partial"
    partial.write_text(json.dumps(result))
    partial.replace(directory / f"rank-{rank}.json")


def read(directory: Path, world: int, done: subprocess.CompletedProcess | None = None) -> list:
    """In the parent: every rank's result, by rank; a RuntimeError that shows the exit code
    and both streams' tails when a rank did not report."""
    paths = [Path(directory) / f"rank-{rank}.json" for rank in range(world)]
    missing = [p.name for p in paths if not p.exists()]
    if missing or (done is not None and done.returncode):
        detail = ""
        if done is not None:
            detail = (
                f" (exit {done.returncode})\nstdout:\n{(done.stdout or '')[-1500:]}"
                f"\nstderr:\n{(done.stderr or '')[-3000:]}"
            )
        raise RuntimeError(f"no result from {', '.join(missing) or 'a rank'}{detail}")
    return [json.loads(p.read_text()) for p in paths]
