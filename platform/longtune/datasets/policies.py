"""Per-org processing policy: the PII policy row -> the scrubber's PiiPolicy, and limits.

Why validation lives here and not in the serializer: the Django admin and the API both edit
OrgPiiPolicy, and a bad regex must be refused at edit time by either door, never discovered by
a worker halfway through someone's upload.
"""

from __future__ import annotations

from collections.abc import Iterable

import re2

from longtune.datasets.limits import DatasetLimits
from longtune.datasets.pii import ALL_ENTITIES, PiiPolicy, compile_allow_pattern
from longtune.tenancy.models import Organization

# Bounds on what an org may put in its policy: every allow-pattern runs against every
# detected value of every upload, so the list stays short and each pattern small.
MAX_ALLOW_VALUES = 200
MAX_ALLOW_VALUE_LENGTH = 256
MAX_ALLOW_PATTERNS = 20
MAX_ALLOW_PATTERN_LENGTH = 200


class PolicyError(ValueError):
    """One invalid policy field: ``field`` and ``code`` are what the API reports."""

    def __init__(self, field: str, code: str, message: str) -> None:
        super().__init__(message)
        self.field, self.code, self.message = field, code, message


def _string_list(field: str, value: object, max_items: int, max_length: int) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(field, "invalid_type", f"{field} must be a list of strings.")
    if len(value) > max_items:
        raise PolicyError(field, "too_many_items", f"{field} holds at most {max_items} items.")
    for index, item in enumerate(value):
        if not item.strip():
            raise PolicyError(f"{field}.{index}", "blank", "Empty strings are not allowed.")
        if len(item) > max_length:
            raise PolicyError(f"{field}.{index}", "too_long", f"At most {max_length} characters.")
    return value


def validate_policy_fields(entities: object, allow_values: object, allow_patterns: object) -> None:
    """Raise PolicyError for the first invalid field (shape, bounds, unknown entity, bad regex)."""
    _string_list("entities", entities, len(ALL_ENTITIES), 64)
    unknown = sorted(set(entities) - ALL_ENTITIES)  # type: ignore[arg-type]
    if unknown:
        raise PolicyError(
            "entities",
            "unknown_entity",
            f"Unknown entity types {unknown}; known: {sorted(ALL_ENTITIES)}.",
        )
    _string_list("allow_values", allow_values, MAX_ALLOW_VALUES, MAX_ALLOW_VALUE_LENGTH)
    patterns = _string_list(
        "allow_patterns", allow_patterns, MAX_ALLOW_PATTERNS, MAX_ALLOW_PATTERN_LENGTH
    )
    for index, pattern in enumerate(patterns):
        try:
            compile_allow_pattern(pattern)
        except re2.error as exc:
            raise PolicyError(
                f"allow_patterns.{index}",
                "invalid_regex",
                f"Invalid regular expression for RE2 (linear-time; no look-arounds or "
                f"back-references): {exc}.",
            ) from exc


def build_pii_policy(
    entities: Iterable[str], allow_values: Iterable[str], allow_patterns: Iterable[str]
) -> PiiPolicy:
    return PiiPolicy(
        entities=frozenset(entities),
        allow_values=frozenset(allow_values),
        allow_patterns=tuple(allow_patterns),
    )


def pii_policy_for(org: Organization) -> PiiPolicy:
    """The scrubber policy of ``org``: its OrgPiiPolicy row, or the default (scrub everything)."""
    from longtune.datasets.models import OrgPiiPolicy

    row = OrgPiiPolicy.objects.for_org(org).first()
    if row is None:
        return PiiPolicy()
    return build_pii_policy(row.entities, row.allow_values, row.allow_patterns)


def dataset_limits_for(org: Organization) -> DatasetLimits:
    """Upload limits for ``org``. Same for every plan today; the hook is where plans differ."""
    return DatasetLimits()
