"""The web process: stdlib ``platform`` is not shadowed, and torch is never imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "LONGTUNE_VAR_DIR": str(tmp_path / "var"),
            "DJANGO_SETTINGS_MODULE": "longtune.settings",
            "PYTHONPATH": f"{REPO_ROOT / 'platform'}:{REPO_ROOT}",
        },
    )


def test_stdlib_platform_still_works_from_the_repo_root(tmp_path):
    result = run_python("import platform; print(platform.system())", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Linux"


def test_web_process_never_imports_torch(tmp_path):
    result = run_python(
        """
        import pkgutil, importlib, sys
        import django
        django.setup()
        from django.urls import get_resolver
        get_resolver().url_patterns
        import longtune
        for module in pkgutil.walk_packages(longtune.__path__, "longtune."):
            importlib.import_module(module.name)  # every module of the control plane
        from django.test import Client
        client = Client()
        assert client.get("/v1/organization").status_code == 401
        assert client.get("/v1/openapi.json").status_code == 200  # imports every view
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "transformers", "peft"})
        print("HEAVY", heavy)
        assert "torch" not in sys.modules, heavy
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HEAVY []" in result.stdout
