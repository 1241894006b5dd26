"""OPTIONS answers without introspecting serializers.

DRF's ``SimpleMetadata`` builds a form description from ``get_serializer()``, which a view
without a ``serializer_class`` (most of ours pick one per action, or none) answers with an
AssertionError: a 500 for any OPTIONS request. The OpenAPI schema at ``/v1/openapi.json`` is
the machine-readable description; OPTIONS says only what the view renders and parses (and
DRF's ``Allow`` header lists its methods).
"""

from __future__ import annotations

from typing import Any

from rest_framework.metadata import BaseMetadata
from rest_framework.request import Request


class RoutingMetadata(BaseMetadata):
    def determine_metadata(self, request: Request, view: Any) -> dict[str, Any]:
        return {
            "name": view.get_view_name(),
            "renders": [renderer.media_type for renderer in view.renderer_classes],
            "parses": [parser.media_type for parser in view.parser_classes],
            "schema": "/v1/openapi.json",
        }
