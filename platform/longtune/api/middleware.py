"""ApiErrorMiddleware: nothing under /v1/ leaves as an HTML error page or a traceback.

DRF views already answer handled errors with the envelope (``api.errors.exception_handler``).
This catches what escapes them and what never reached DRF:
- JSON bodies that a non-DRF view failed to decode -> 400 ``invalid_json``;
- Django's own 4xx exceptions (Http404, PermissionDenied, SuspiciousOperation) -> their envelope;
- an unknown /v1/ URL -> 404 ``not_found`` (also with DEBUG=True);
- any other exception -> logged with its traceback, answered with a 500 ``internal_error``
  envelope. That branch should never run: a client-caused 500 is a bug.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from rest_framework.exceptions import APIException

from longtune.api.errors import (
    ApiError,
    as_api_exception,
    error_response,
    handler404,
    internal_error_response,
    is_api_path,
)

logger = logging.getLogger("longtune.api")


class ApiErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            is_api_path(request)
            and response.status_code == 404
            and response.get("Content-Type", "").startswith("text/html")
        ):
            # With DEBUG=True Django answers an unknown URL with its HTML debug page instead
            # of calling handler404; keep /v1/ JSON either way.
            return handler404(request)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_api_path(request):
            return None  # the dashboard and admin keep Django's own handling
        if isinstance(exception, json.JSONDecodeError | UnicodeDecodeError):
            return error_response(
                status=400,
                code="invalid_json",
                message=f"The request body is not valid JSON: {exception}",
            )
        api_exc = as_api_exception(exception)
        if isinstance(api_exc, ApiError):
            return error_response(
                status=api_exc.status_code,
                code=api_exc.code,
                message=api_exc.message,
                param=api_exc.param,
                type=api_exc.type,
            )
        if isinstance(api_exc, APIException):
            return error_response(
                status=api_exc.status_code,
                code=str(api_exc.default_code),
                message=str(api_exc.detail),
            )
        logger.exception("Unhandled exception on %s %s", request.method, request.path)
        return internal_error_response()
