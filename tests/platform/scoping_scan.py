"""The AST scan behind tests/platform/test_scoping.py: ``<OrgOwnedModel>.objects.<x>``.

A static twin of the runtime guard in ``longtune.tenancy.scoping``: the guard raises when an
unscoped query runs, this scan fails when one is *written*, so a code path no test exercises
cannot carry one either. Allowed after ``.objects``: ``ALLOWED_MANAGER_CALLS`` (``for_org``,
``unscoped_across_orgs``, ``create``, ``bulk_create``, ``none``). The model is recognised by
its class name or an ``import ... as`` alias of it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from longtune.tenancy.scoping import ALLOWED_MANAGER_CALLS


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    model: str
    call: str | None  # None: ``X.objects`` used bare (passed around, assigned)

    def __str__(self) -> str:
        what = f".objects.{self.call}" if self.call else ".objects"
        return f"{self.path}:{self.line}: {self.model}{what}"


def _model_aliases(tree: ast.AST, org_owned: frozenset[str]) -> dict[str, str]:
    aliases = {name: name for name in org_owned}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name in org_owned and alias.asname:
                    aliases[alias.asname] = alias.name
    return aliases


def scan_source(source: str, org_owned: Iterable[str], path: str = "<source>") -> list[Violation]:
    owned = frozenset(org_owned)
    tree = ast.parse(source)
    aliases = _model_aliases(tree, owned)
    parents: dict[ast.AST, ast.AST] = {
        child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)
    }
    found = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Attribute)
            and node.attr == "objects"
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            continue
        parent = parents.get(node)
        call = parent.attr if isinstance(parent, ast.Attribute) else None
        if call not in ALLOWED_MANAGER_CALLS:
            found.append(Violation(path, node.lineno, aliases[node.value.id], call))
    return found


def scan_tree(root: Path, org_owned: Iterable[str], exempt: Iterable[Path] = ()) -> list[Violation]:
    skip = {p.resolve() for p in exempt}
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.resolve() in skip or "migrations" in path.parts:
            continue
        found += scan_source(path.read_text(), org_owned, str(path))
    return found
