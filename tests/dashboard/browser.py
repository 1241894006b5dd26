"""Browser-test plumbing: Debian's chromium driven by Playwright, a live uvicorn server, axe-core.

Playwright's own browser download cannot run here (and CI must not depend on it), so the
browser is the ``chromium`` package that ``scripts/setup.sh --services`` installs, launched by
path. axe-core is the copy vendored under the dashboard's static files (no network).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.fixtures.services import REPO_ROOT, free_port, wait_for_port

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE_JS = REPO_ROOT / "platform/longtune/dashboard/static/dashboard/vendor/axe-core/axe.min.js"
SCREENSHOTS = REPO_ROOT / "var" / "screenshots" / "dashboard"
BLOCKING_IMPACTS = ("serious", "critical")


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def live_server(env: dict[str, str]) -> Iterator[str]:
    """uvicorn serving longtune.asgi, the production shape (as scripts/run.sh starts it)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "longtune.asgi:application", "--app-dir", "platform",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=REPO_ROOT, env=env,
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(20)


def axe_violations(page) -> list[dict]:
    """Serious and critical axe-core violations of the page as it is now."""
    page.add_script_tag(path=str(AXE_JS))
    result = page.evaluate("async () => await axe.run(document)")
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"],
         "nodes": [n["html"][:200] for n in v["nodes"][:3]]}
        for v in result["violations"]
        if v["impact"] in BLOCKING_IMPACTS
    ]  # fmt: skip


class Steps:
    """Screenshot + accessibility check of each step, kept as artifacts under var/."""

    def __init__(self, name: str) -> None:
        self.dir = SCREENSHOTS / name
        shutil.rmtree(self.dir, ignore_errors=True)  # only this run's steps
        self.dir.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self.problems: dict[str, list[dict]] = {}

    def check(self, page, step: str) -> None:
        self.count += 1
        page.screenshot(path=str(self.dir / f"{self.count:02d}-{step}.png"), full_page=True)
        violations = axe_violations(page)
        if violations:
            self.problems[f"{step} ({page.url})"] = violations

    def path(self) -> Path:
        return self.dir
