"""No class in platform/ is named like a DRF class it is not (the old /v1/models
``ModelViewSet`` read as DRF's ``ModelViewSet`` to anyone opening the file)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

PLATFORM = Path(__file__).resolve().parents[2] / "platform"
DRF_MODULES = (
    "rest_framework.authentication",
    "rest_framework.exceptions",
    "rest_framework.fields",
    "rest_framework.generics",
    "rest_framework.mixins",
    "rest_framework.pagination",
    "rest_framework.permissions",
    "rest_framework.routers",
    "rest_framework.serializers",
    "rest_framework.throttling",
    "rest_framework.views",
    "rest_framework.viewsets",
)


def drf_class_names() -> set[str]:
    names = set()
    for module_name in DRF_MODULES:
        module = importlib.import_module(module_name)
        names |= {
            name
            for name, value in vars(module).items()
            if isinstance(value, type)
            and value.__module__.startswith("rest_framework")
            and not issubclass(
                value, tuple
            )  # routers' Route/DynamicRoute records, not classes to extend
        }
    return names


def shadowing_classes(source: str, drf_names: set[str]) -> list[str]:
    """Names of the classes ``source`` defines that DRF also defines."""
    tree = ast.parse(source)
    return [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name in drf_names]


def test_the_scan_catches_a_shadowing_class():
    names = drf_class_names()
    assert {"ModelViewSet", "GenericViewSet", "Serializer"} <= names
    violating = "class ModelViewSet(OrgScopedViewSet):\n    model = None\n"
    assert shadowing_classes(violating, names) == ["ModelViewSet"]
    assert shadowing_classes("class CatalogModelViewSet(OrgScopedViewSet): ...", names) == []


def test_no_platform_class_shadows_a_drf_class():
    names = drf_class_names()
    found = [
        f"{path.relative_to(PLATFORM)}: {name}"
        for path in sorted(PLATFORM.rglob("*.py"))
        for name in shadowing_classes(path.read_text(), names)
    ]
    assert found == [], f"rename these (they read as DRF's classes): {found}"
