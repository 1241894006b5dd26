"""Request body parsers.

DRF's JSONParser lets ``RecursionError`` escape (``[[[[...`` nested 100k deep), which would
be a client-caused 500. This one turns every decoding failure into 400 ``invalid_json``.
"""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: dict | None = None
    ) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.", code="invalid_json") from None
