"""OpenAI-style cursor pagination, the default shape of every /v1/ list.

``GET /v1/things?limit=20&after=thing_abc`` ->
``{"object": "list", "data": [...], "has_more": true, "first_id": "...", "last_id": "..."}``.

Newest first, ordered by the primary key (monotonic, indexed, unique — a stable cursor even
when many rows share a timestamp). The cursor is a public id; it is resolved inside the
already org-scoped queryset, so another org's id is simply an unknown cursor.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response

from longtune.api.errors import ApiError
from longtune.api.ids import PUBLIC_ID_PATTERN, looks_like_public_id

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT  # an empty ?limit= is refused below, as the schema says
    # isascii(): str.isdigit() accepts "²", which int() refuses.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3 and 1 <= int(raw) <= MAX_LIMIT):
        raise ApiError(
            status=400,
            code="invalid_limit",
            message=f"limit must be an integer between 1 and {MAX_LIMIT}.",
            param="limit",
        )
    return int(raw)


class OpenAICursorPagination(BasePagination):
    ordering_field = "pk"
    id_field = "public_id"

    def paginate_queryset(
        self, queryset: QuerySet, request: Request, view: Any = None
    ) -> list[Any]:
        limit = parse_limit(request.query_params.get("limit"))
        after = request.query_params.get("after")
        queryset = queryset.order_by(f"-{self.ordering_field}")
        if after is not None:
            queryset = queryset.filter(
                **{f"{self.ordering_field}__lt": self._cursor_key(queryset, after)}
            )
        rows = list(queryset[: limit + 1])
        self.has_more = len(rows) > limit
        self.page = rows[:limit]
        return self.page

    def _cursor_key(self, queryset: QuerySet, after: str) -> Any:
        """400 for a cursor that is not an id at all; 404 for an id that names nothing in this
        list (another org's object included: it is simply absent)."""
        if not looks_like_public_id(after):
            raise ApiError(
                status=400,
                code="invalid_cursor",
                message=f"after={after[:80]!r} is not an object id.",
                param="after",
            )
        found = (
            queryset.filter(**{self.id_field: after})
            .values_list(self.ordering_field, flat=True)
            .first()
        )
        if found is None:
            raise ApiError(
                status=404,
                code="cursor_not_found",
                message=f"after={after!r} is not the id of an object in this list.",
                param="after",
            )
        return found

    def get_paginated_response(self, data: list[dict[str, Any]]) -> Response:
        return Response(list_envelope(data, has_more=self.has_more))

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["object", "data", "has_more", "first_id", "last_id"],
            "properties": {
                "object": {"type": "string", "enum": ["list"]},
                "data": schema,
                "has_more": {"type": "boolean"},
                "first_id": {"type": "string", "nullable": True},
                "last_id": {"type": "string", "nullable": True},
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": "after",
                "in": "query",
                "required": False,
                "description": "Return objects after (older than) the object with this id "
                "(400 `invalid_cursor` if it is not an id, 404 `cursor_not_found` if it names "
                "no object in this list).",
                "schema": {"type": "string", "pattern": f"^{PUBLIC_ID_PATTERN}$"},
            },
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": f"Number of objects to return, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            },
        ]


def list_envelope(data: list[dict[str, Any]], *, has_more: bool = False) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
