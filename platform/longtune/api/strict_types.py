"""JSON bodies are typed: a string field takes a JSON string, a boolean ``true``/``false``, a
number field a JSON number.

DRF coerces by default (``"name": 0`` becomes ``"0"``, ``"hard_cap": 0`` becomes False,
``"n_epochs": "3"`` becomes 3), so the server accepted bodies its own OpenAPI schema calls
invalid, and a typo'd type went unnoticed. Form and query-string input (a ``QueryDict``, where
every value is text) keep DRF's parsing. ``install()`` runs once, from ``ApiConfig.ready``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import QueryDict
from rest_framework import serializers


def _is_json_input(field: serializers.Field) -> bool:
    root = field.root
    return not isinstance(getattr(root, "initial_data", None), QueryDict)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return _is_number(value) and (isinstance(value, int) or float(value).is_integer())


ACCEPTS: list[tuple[type[serializers.Field], Callable[[Any], bool]]] = [
    (serializers.CharField, lambda value: isinstance(value, str)),
    (serializers.BooleanField, lambda value: isinstance(value, bool)),
    (serializers.IntegerField, _is_integer),
    (serializers.FloatField, _is_number),
    # Decimals travel as strings (COERCE_DECIMAL_TO_STRING; the schema says so): "250.00".
    (serializers.DecimalField, lambda value: isinstance(value, str)),
]


def _strict(field_class: type[serializers.Field], accepts: Callable[[Any], bool]) -> None:
    parse = field_class.to_internal_value
    if getattr(parse, "_longtune_strict", False):
        return

    def to_internal_value(self: serializers.Field, data: Any) -> Any:
        if not accepts(data) and _is_json_input(self):
            self.fail("invalid")
        return parse(self, data)

    to_internal_value._longtune_strict = True  # type: ignore[attr-defined]
    field_class.to_internal_value = to_internal_value  # type: ignore[method-assign]


def install() -> None:
    for field_class, accepts in ACCEPTS:
        _strict(field_class, accepts)
