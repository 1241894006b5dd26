"""Layering rules of the compute layer, checked on the source (AST), each one shown to catch
a violating example built here:

1. platform/ imports no workers module but the Celery app (``workers.celery_app``): task
   modules are the bridge to torch, and importing one from the web tier made a cycle
   (datasets.services -> workers.datasets -> datasets.services).
2. Inside platform/, only the compute layer imports workers at all.
3. Only ``compute/broker.py`` publishes (``send_task``, ``apply_async``, ``delay``) in
   platform/ and workers/: everything else calls ``compute.broker.send`` with a task name.
4. No ``queue="..."`` literal outside compute: queue names come from ``compute.queues``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CELERY_APP = "workers.celery_app"
COMPUTE = "platform/longtune/compute/"
BROKER = "platform/longtune/compute/broker.py"
PUBLISHING_CALLS = {"send_task", "apply_async", "delay"}


def _workers_imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "workers"
            ]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "workers":
                continue
            if node.module == "workers":  # from workers import celery_app, finetuning
                found += [(node.lineno, f"workers.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and str(node.args[0].value).split(".")[0] == "workers"
        ):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def violations(source: str, path: str) -> list[str]:
    """Every rule broken by ``source`` if it lived at ``path`` (relative to the repo)."""
    tree = ast.parse(source, filename=path)
    found = []
    if path.startswith("platform/"):
        for line, module in _workers_imports(tree):
            if module != CELERY_APP:
                found.append(
                    f"{path}:{line}: imports {module} (platform/ may import only {CELERY_APP})"
                )
            elif not path.startswith(COMPUTE):
                found.append(f"{path}:{line}: imports {module} outside the compute layer")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "attr", None)
        if name in PUBLISHING_CALLS and path != BROKER:
            found.append(f"{path}:{node.lineno}: .{name}() publishes; use compute.broker.send")
        if not path.startswith(COMPUTE):
            for keyword in node.keywords:
                if keyword.arg == "queue" and isinstance(keyword.value, ast.Constant):
                    found.append(
                        f"{path}:{node.lineno}: queue={keyword.value.value!r}; "
                        "name queues through compute.queues"
                    )
    return found


def sources() -> list[Path]:
    return sorted(p for tier in ("platform", "workers") for p in (REPO / tier).rglob("*.py"))


def test_the_tree_keeps_the_rules():
    broken = [
        v
        for path in sources()
        for v in violations(path.read_text(), path.relative_to(REPO).as_posix())
    ]
    assert broken == []


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        (  # the cycle this layer removed
            "platform/longtune/datasets/services.py",
            "def enqueue(pk):\n    from workers.datasets import scrub_file\n",
            "imports workers.datasets",
        ),
        ("platform/longtune/x.py", "import workers.finetuning\n", "imports workers.finetuning"),
        ("platform/longtune/x.py", "from workers import inference\n", "imports workers.inference"),
        (
            "platform/longtune/x.py",
            "import importlib\nimportlib.import_module('workers.tasks')\n",
            "imports workers.tasks",
        ),
        (
            "platform/longtune/compute/lifecycle.py",
            "from workers.finetuning import train_job\n",
            "imports workers.finetuning",
        ),
        (
            "platform/longtune/inference/services.py",
            "from workers.celery_app import app\n",
            "outside the compute layer",
        ),
        (
            "platform/longtune/inference/services.py",
            "app.send_task('longtune.inference.serve_endpoint', args=[1, 1])\n",
            ".send_task() publishes",
        ),
        ("workers/finetuning.py", "train_job.apply_async(args=[1, 2])\n", ".apply_async()"),
        (
            "workers/tasks.py",
            "@app.task(name=tasks.PING, queue='cpu')\ndef f(): ...\n",
            "queue='cpu'",
        ),
    ],
)
def test_each_rule_catches_a_violation(path, source, expected):
    found = violations(source, path)
    assert len(found) == 1 and expected in found[0], found


def test_what_the_rules_allow():
    assert violations("from workers.celery_app import app\napp.send_task('x')\n", BROKER) == []
    assert violations("from longtune.compute import broker, queues\n"
                      "broker.send('t', [1], queues.CPU)\n", "platform/longtune/x.py") == []  # fmt: skip
    assert violations("from workers.heartbeat import BackgroundHeartbeat\n", "workers/x.py") == []
