"""The web process: stdlib ``platform`` is not shadowed, and torch is never imported.

The web tier reaches gpu_runtime only through ``gpu_runtime.contract`` and the memory planner
(``gpu_runtime.memory_planner``, which job planning runs at create time), which must stay
torch-free whatever the rest of gpu_runtime imports: the contract imports only the standard
library, the planner only the standard library and the contract.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRACT = "gpu_runtime.contract"
PLANNER = "gpu_runtime.memory_planner"
# The only gpu_runtime modules platform/ may import, each with what it may import itself.
WEB_TIER_MODULES = {CONTRACT: set(), PLANNER: {CONTRACT}}


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


def _gpu_runtime_names(node: ast.AST) -> list[str]:
    """The gpu_runtime modules one import statement names (none for other nodes).

    ``from gpu_runtime import x`` counts as importing ``gpu_runtime.x`` (it may be a submodule).
    """
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if node.module == "gpu_runtime":
            names = [f"gpu_runtime.{alias.name}" for alias in node.names]
        else:
            names = [node.module]
    else:
        return []
    return [n for n in names if n == "gpu_runtime" or n.startswith("gpu_runtime.")]


def gpu_runtime_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) for every gpu_runtime module an import statement in ``source`` names."""
    return [
        (node.lineno, name)
        for node in ast.walk(ast.parse(source))
        for name in _gpu_runtime_names(node)
    ]


def test_the_import_scanner_sees_every_spelling():
    source = textwrap.dedent(
        """
        import gpu_runtime
        import gpu_runtime.rope as r
        from gpu_runtime import config, contract
        from gpu_runtime.contract import TrainConfig
        def lazy():
            from gpu_runtime.train import train
        from gpu_runtime_extra import x
        from .gpu_runtime import y
        """
    )
    assert gpu_runtime_imports(source) == [
        (2, "gpu_runtime"),
        (3, "gpu_runtime.rope"),
        (4, "gpu_runtime.config"),
        (4, "gpu_runtime.contract"),
        (5, "gpu_runtime.contract"),
        (7, "gpu_runtime.train"),
    ]


def test_platform_imports_no_gpu_runtime_module_but_the_contract():
    files = sorted((REPO_ROOT / "platform").rglob("*.py"))
    imports = {
        f"{path.relative_to(REPO_ROOT)}:{line}": module
        for path in files
        for line, module in gpu_runtime_imports(path.read_text())
    }
    assert CONTRACT in imports.values(), "scanned no platform import of the contract"
    assert PLANNER in imports.values(), "scanned no platform import of the memory planner"
    forbidden = {
        where: module for where, module in imports.items() if module not in WEB_TIER_MODULES
    }
    assert forbidden == {}, f"platform/ may import only {sorted(WEB_TIER_MODULES)} from gpu_runtime"


def top_level_imports(source: str) -> set[str]:
    """Every module an import statement in ``source`` names: top-level package for the
    standard library, the full name for gpu_runtime modules."""
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module, "relative import in a web-tier module"
            names = [node.module]
        else:
            continue
        imported.update(n if n.startswith("gpu_runtime.") else n.split(".")[0] for n in names)
    return imported


def test_the_import_rule_of_web_tier_modules_catches_a_violation():
    bad = "import json\nfrom gpu_runtime.contract import X\nimport torch\n"
    assert top_level_imports(bad) == {"json", "gpu_runtime.contract", "torch"}


@pytest.mark.parametrize("module", sorted(WEB_TIER_MODULES))
def test_web_tier_modules_import_only_the_standard_library_and_the_contract(module):
    path = REPO_ROOT / Path(*module.split(".")).with_suffix(".py")
    imported = top_level_imports(path.read_text())
    assert imported, "found no imports at all: is the scan broken?"
    ours = {m for m in imported if m.startswith("gpu_runtime")}
    assert ours <= WEB_TIER_MODULES[module], ours
    assert imported - ours - {"__future__"} <= sys.stdlib_module_names, imported


def test_importing_the_contract_loads_no_torch(tmp_path):
    result = run_python(
        """
        import sys
        import gpu_runtime.contract
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "gpu_runtime")
        print("LOADED", loaded)
        assert "torch" not in sys.modules
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LOADED ['gpu_runtime', 'gpu_runtime.contract']" in result.stdout


def test_importing_the_memory_planner_loads_no_torch(tmp_path):
    result = run_python(
        """
        import sys
        import gpu_runtime.memory_planner
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "gpu_runtime")
        print("LOADED", loaded)
        assert "torch" not in sys.modules
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "LOADED ['gpu_runtime', 'gpu_runtime.contract', 'gpu_runtime.memory_planner']"
        in result.stdout
    )


def module_level_gpu_runtime_imports(source: str) -> list[tuple[int, str]]:
    """Imports of gpu_runtime that run when the module loads: its top-level statements
    (``if TYPE_CHECKING:`` blocks and function bodies are not top-level statements)."""
    return [
        (node.lineno, name) for node in ast.parse(source).body for name in _gpu_runtime_names(node)
    ]


def test_module_level_scanner_ignores_lazy_and_type_checking_imports():
    source = textwrap.dedent(
        """
        from typing import TYPE_CHECKING
        from gpu_runtime.contract import ROPE_METHODS
        if TYPE_CHECKING:
            from gpu_runtime.contract import TrainConfig
        def lazy():
            from gpu_runtime.contract import TrainConfig
        """
    )
    assert module_level_gpu_runtime_imports(source) == [(3, "gpu_runtime.contract")]


def test_platform_loads_gpu_runtime_only_when_a_function_needs_it():
    """The web process must start without reaching into gpu_runtime: every platform/ import of
    the contract sits in the function that uses it."""
    found = {
        f"{path.relative_to(REPO_ROOT)}:{line}": module
        for path in sorted((REPO_ROOT / "platform").rglob("*.py"))
        for line, module in module_level_gpu_runtime_imports(path.read_text())
    }
    assert found == {}
