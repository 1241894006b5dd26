"""The three tiers and which way imports may point between them (docs/architecture.md).

    platform/ (longtune.*)  ->  gpu_runtime.contract only (torch-free; test_web_process.py)
                            ->  workers.celery_app only, from compute.broker (the Celery app
                                is configuration; tests/compute/test_layering.py)
    workers/                ->  platform, gpu_runtime   (the bridge)
    gpu_runtime/            ->  nothing of ours, no Django, no Celery (a pure ML library)

Every import statement counts, lazy ones inside functions included: a function-level import is
still a dependency, only a cheaper one. Each rule is checked on the real tree and on a small
violating example, so a broken scanner cannot make the rule pass by seeing nothing.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TIER_ROOTS = {
    "platform": REPO_ROOT / "platform" / "longtune",
    "workers": REPO_ROOT / "workers",
    "gpu_runtime": REPO_ROOT / "gpu_runtime",
}
# What the ML library may never import: the web framework, the queue, or our other tiers.
GPU_RUNTIME_FORBIDDEN = {"django", "rest_framework", "celery", "kombu", "longtune", "workers"}


def imported_modules(source: str, module: str = "") -> list[tuple[int, str]]:
    """(line, absolute module) for every import in ``source``; ``from a import b`` yields both
    ``a`` and ``a.b`` (b may be a submodule); relative imports are resolved against ``module``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return sorted(found)


def tier_of(module: str) -> str | None:
    top = module.split(".")[0]
    return {"longtune": "platform", "workers": "workers", "gpu_runtime": "gpu_runtime"}.get(top)


def module_name(tier: str, path: Path) -> str:
    root = TIER_ROOTS[tier]
    package = "longtune" if tier == "platform" else tier
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def tier_files(tier: str) -> Iterable[tuple[str, Path]]:
    for path in sorted(TIER_ROOTS[tier].rglob("*.py")):
        yield module_name(tier, path), path


def import_graph() -> dict[str, set[str]]:
    """module -> our modules it imports (only names that exist as our modules)."""
    ours = {name for tier in TIER_ROOTS for name, _ in tier_files(tier)}
    graph: dict[str, set[str]] = {}
    for tier in TIER_ROOTS:
        for name, path in tier_files(tier):
            targets = {m for _, m in imported_modules(path.read_text(), name) if m in ours}
            graph[name] = targets - {name}
    return graph


def gpu_runtime_violations(source: str) -> list[str]:
    return [
        f"{line}: {module}"
        for line, module in imported_modules(source)
        if module.split(".")[0] in GPU_RUNTIME_FORBIDDEN
    ]


def tier_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles that cross a tier boundary (strongly connected components, Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len({tier_of(m) for m in component}) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


# --------------------------------------------------------------------------- the scanners


def test_the_scanner_resolves_every_spelling():
    source = textwrap.dedent(
        """
        import django.db
        from celery import shared_task
        from . import sibling
        from ..api import errors
        def lazy():
            from workers.finetuning import train
        """
    )
    found = imported_modules(source, "longtune.datasets.services")
    assert (2, "django.db") in found
    assert (3, "celery.shared_task") in found
    assert (4, "longtune.datasets.sibling") in found
    assert (5, "longtune.api.errors") in found
    assert (7, "workers.finetuning") in found


def test_gpu_runtime_rule_catches_a_violating_module():
    bad = "import torch\ndef f():\n    from django.conf import settings\nfrom longtune import x\n"
    assert gpu_runtime_violations(bad) == [
        "3: django.conf",
        "3: django.conf.settings",
        "4: longtune",
        "4: longtune.x",
    ]
    assert gpu_runtime_violations("import torch\nfrom transformers import AutoModel\n") == []


def test_the_cycle_finder_sees_a_cycle_across_tiers_only():
    graph = {
        "longtune.a": {"workers.b"},
        "workers.b": {"longtune.a", "gpu_runtime.c"},
        "gpu_runtime.c": set(),
        "longtune.d": {"longtune.e"},
        "longtune.e": {"longtune.d"},  # a cycle inside one tier is not a tier cycle
    }
    assert tier_cycles(graph) == [["longtune.a", "workers.b"]]


# --------------------------------------------------------------------------- the real tree


def test_gpu_runtime_imports_no_django_celery_or_other_tier():
    found = {
        str(path.relative_to(REPO_ROOT)): violations
        for _, path in tier_files("gpu_runtime")
        if (violations := gpu_runtime_violations(path.read_text()))
    }
    assert found == {}


def test_no_import_cycle_between_tiers():
    graph = import_graph()
    assert any(t.startswith("longtune.") for t in graph["workers.finetuning"]), "empty graph?"
    assert tier_cycles(graph) == []
