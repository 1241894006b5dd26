"""Prefixed public ids ("org_3Fq…", "key_…", "file-…", "ftjob-…").

Why: database primary keys are sequential and leak volume; clients and URLs only ever see
these strings. The prefix says what kind of object an id names (useful in logs and support
tickets) and lets URL patterns reject an id of the wrong kind before any query runs.
"""

from __future__ import annotations

import re
import secrets
import string
from typing import Any

from django.db import models

_ALPHABET = string.ascii_letters + string.digits
RANDOM_PART_LENGTH = 24  # 24 base62 chars ≈ 143 bits: unguessable, collision-free in practice
PUBLIC_ID_MAX_LENGTH = 64
# What a well-formed public id looks like, whatever its prefix. Anything else in a path or a
# cursor is rejected before it reaches the database (e.g. a NUL byte, which PostgreSQL refuses).
PUBLIC_ID_PATTERN = r"[A-Za-z0-9]{1,16}[_-][A-Za-z0-9]{1,48}"
_PUBLIC_ID_RE = re.compile(rf"^{PUBLIC_ID_PATTERN}$")


def new_public_id(prefix: str) -> str:
    """A fresh id such as ``new_public_id("org_") == "org_7GQ…"``. The prefix includes its separator."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(RANDOM_PART_LENGTH))


def looks_like_public_id(value: str) -> bool:
    return bool(_PUBLIC_ID_RE.match(value))


def url_regex_for_prefix(prefix: str) -> str:
    """URL regex matching only ids with this prefix (used as a viewset's ``lookup_value_regex``)."""
    return re.escape(prefix) + r"[A-Za-z0-9]{1,48}"


class PublicIdField(models.CharField):
    """A unique, indexed CharField that fills itself with ``new_public_id(prefix)`` on insert.

    ``PublicIdField(prefix="file-")`` — the prefix is kept in migrations (``deconstruct``) so
    code and the schema agree on it, and ``Model._meta.get_field("public_id").prefix`` tells
    generic code (URL regexes, the tenant-isolation test) what ids of that model look like.
    """

    def __init__(self, *args: Any, prefix: str, **kwargs: Any) -> None:
        if not re.match(r"^[A-Za-z0-9]{1,16}[_-]$", prefix):
            raise ValueError(
                f"public id prefix must be letters/digits ending in '_' or '-': {prefix!r}"
            )
        self.prefix = prefix
        kwargs.setdefault("max_length", PUBLIC_ID_MAX_LENGTH)
        kwargs.setdefault("unique", True)
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> tuple[str, str, list[Any], dict[str, Any]]:
        name, path, args, kwargs = super().deconstruct()
        kwargs["prefix"] = self.prefix
        for key, default in (
            ("max_length", PUBLIC_ID_MAX_LENGTH),
            ("unique", True),
            ("editable", False),
        ):
            if kwargs.get(key) == default:
                kwargs.pop(key)
        return name, path, args, kwargs

    def pre_save(self, model_instance: models.Model, add: bool) -> str:
        value = getattr(model_instance, self.attname)
        if not value:
            value = new_public_id(self.prefix)
            setattr(model_instance, self.attname, value)
        return value


def public_id_prefix(model: type[models.Model]) -> str:
    """The prefix of ``model.public_id`` (raises if the model has no PublicIdField)."""
    field = model._meta.get_field("public_id")
    if not isinstance(field, PublicIdField):
        raise TypeError(f"{model.__name__}.public_id is not a PublicIdField")
    return field.prefix
