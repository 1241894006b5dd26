"""Browser-test plumbing: Debian's chromium driven by Playwright, a live uvicorn server, axe-core.

Playwright's own browser download cannot run here (and CI must not depend on it), so the
browser is the ``chromium`` package that ``scripts/setup.sh --services`` installs, launched by
path. axe-core is the copy vendored under the dashboard's static files (no network).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.fixtures.services import REPO_ROOT

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
