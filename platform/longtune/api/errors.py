"""One error envelope everywhere, shaped like OpenAI's::

    {"error": {"type": "invalid_request_error", "code": "required",
               "message": "messages.0.role: This field is required.", "param": "messages.0.role"}}

``type`` is the broad class (a client branches on it), ``code`` the machine-readable reason,
``param`` the field path or location at fault (``None`` when the whole request is at fault).

Raise ``ApiError(status=400, code="invalid_json", message="...", param="line 3")`` from any view
or helper; DRF exceptions, Django's 404/500 handlers and ApiErrorMiddleware all produce the same
envelope through ``error_response``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework import status as http_status
from rest_framework.response import Response
from rest_framework.views import set_rollback

logger = logging.getLogger("longtune.api")

API_PATH_PREFIX = "/v1/"

# HTTP status -> default error type (OpenAI's vocabulary where it has one).
ERROR_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    406: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


def error_type_for_status(status: int) -> str:
    if status in ERROR_TYPE_BY_STATUS:
        return ERROR_TYPE_BY_STATUS[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(
    *, code: str, message: str, param: str | None = None, type: str | None = None, status: int = 400
) -> dict[str, Any]:
    return {
        "error": {
            "type": type or error_type_for_status(status),
            "code": code,
            "message": message,
            "param": param,
        }
    }


class ApiError(drf_exceptions.APIException):
    """A coded 4xx/5xx that any view, serializer or helper raises to answer with the envelope."""

    def __init__(
        self,
        *,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = status
        self.code = code
        self.message = message
        self.param = param
        self.type = type or error_type_for_status(status)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(
            code=self.code,
            message=self.message,
            param=self.param,
            type=self.type,
            status=self.status_code,
        )


def error_response(
    *, status: int, code: str, message: str, param: str | None = None, type: str | None = None
) -> JsonResponse:
    """A plain Django JsonResponse carrying the envelope (for code outside DRF views)."""
    return JsonResponse(
        error_body(code=code, message=message, param=param, type=type, status=status), status=status
    )


# --- validation errors ----------------------------------------------------------------------


def flatten_validation_errors(
    detail: Any, path: tuple[str, ...] = ()
) -> list[tuple[str | None, str, str]]:
    """DRF's nested error detail -> [(param path like "messages.0.role", code, message)]."""
    if isinstance(detail, dict):
        found: list[tuple[str | None, str, str]] = []
        for key, value in detail.items():
            sub_path = path if key in ("non_field_errors", "__all__") else (*path, str(key))
            found.extend(flatten_validation_errors(value, sub_path))
        return found
    if isinstance(detail, list):
        found = []
        nested = any(isinstance(item, dict | list) for item in detail)
        for index, item in enumerate(detail):
            if nested:
                if item in ({}, []):
                    continue  # DRF's placeholder for a list element without errors
                found.extend(flatten_validation_errors(item, (*path, str(index))))
            else:
                found.extend(flatten_validation_errors(item, path))
        return found
    code = getattr(detail, "code", None) or "invalid"
    return [(".".join(path) or None, str(code), str(detail))]


def validation_error_body(detail: Any) -> dict[str, Any]:
    errors = flatten_validation_errors(detail) or [(None, "invalid", "Invalid request.")]
    param, code, message = errors[0]
    if param:
        message = f"{param}: {message}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return error_body(code=code, message=message, param=param, status=400)


# --- DRF exception handler ----------------------------------------------------------------------

_DRF_DEFAULT_CODES: dict[type[drf_exceptions.APIException], str] = {
    drf_exceptions.NotAuthenticated: "missing_api_key",
    drf_exceptions.AuthenticationFailed: "invalid_api_key",
    drf_exceptions.PermissionDenied: "permission_denied",
    drf_exceptions.NotFound: "not_found",
    drf_exceptions.MethodNotAllowed: "method_not_allowed",
    drf_exceptions.NotAcceptable: "not_acceptable",
    drf_exceptions.UnsupportedMediaType: "unsupported_media_type",
    drf_exceptions.Throttled: "rate_limit_exceeded",
    drf_exceptions.ParseError: "invalid_json",
}


def _code_for(exc: drf_exceptions.APIException) -> str:
    detail_code = getattr(exc.detail, "code", None)
    for cls, code in _DRF_DEFAULT_CODES.items():
        if isinstance(exc, cls):
            # A raise site that passed its own code (e.g. code="api_key_revoked") wins.
            return detail_code if detail_code and detail_code != exc.default_code else code
    return str(detail_code or exc.default_code)


def _message_for(exc: drf_exceptions.APIException) -> str:
    if isinstance(exc, drf_exceptions.NotAuthenticated):
        return "No API key provided. Send 'Authorization: Bearer lt_...'."
    if isinstance(exc, drf_exceptions.Throttled):
        wait = f" Retry after {int(exc.wait)} s." if exc.wait is not None else ""
        return "Rate limit exceeded for this organization." + wait
    if isinstance(exc.detail, list | dict):
        return "; ".join(message for _, _, message in flatten_validation_errors(exc.detail))
    return str(exc.detail)


def as_api_exception(exc: Exception) -> drf_exceptions.APIException | None:
    if isinstance(exc, drf_exceptions.APIException):
        return exc
    if isinstance(exc, Http404):
        return drf_exceptions.NotFound("No such object.")
    if isinstance(exc, DjangoPermissionDenied):
        return drf_exceptions.PermissionDenied()
    if isinstance(exc, RequestDataTooBig):
        return ApiError(
            status=413, code="request_too_large", message="The request body is too large."
        )
    if isinstance(exc, SuspiciousOperation):
        return ApiError(status=400, code="bad_request", message="The request is malformed.")
    return None


def reject_request_body(request: Any, action_name: str) -> None:
    """400 ``unknown_parameter`` for an action that takes no body (naming its first key).
    Reading ``request.data`` also turns a malformed body into a coded 400."""
    if request.data:
        raise ApiError(
            status=400,
            code="unknown_parameter",
            message=f"{action_name} takes no request body.",
            param=next(iter(request.data), None) if isinstance(request.data, dict) else None,
        )


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every handled error leaves as the envelope.

    Returns None for anything unexpected so the exception propagates to ApiErrorMiddleware,
    which logs it with a traceback and answers with a 500 envelope.
    """
    api_exc = as_api_exception(exc)
    if api_exc is None:
        return None
    headers: dict[str, str] = {}
    if getattr(api_exc, "auth_header", None):
        headers["WWW-Authenticate"] = api_exc.auth_header
    if isinstance(api_exc, drf_exceptions.Throttled) and api_exc.wait is not None:
        headers["Retry-After"] = str(max(1, int(api_exc.wait + 0.999)))
    status = api_exc.status_code
    if isinstance(api_exc, ApiError):
        body = api_exc.body()
        headers.update(api_exc.headers)
    elif isinstance(api_exc, drf_exceptions.ValidationError):
        body = validation_error_body(api_exc.detail)
    else:
        body = error_body(code=_code_for(api_exc), message=_message_for(api_exc), status=status)
    set_rollback()
    return Response(body, status=status, headers=headers)


# --- Django-level handlers (urls.handler404 / handler500) ------------------------------------


def is_api_path(request: HttpRequest) -> bool:
    return request.path.startswith(API_PATH_PREFIX)


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_path(request):
        return error_response(
            status=http_status.HTTP_404_NOT_FOUND,
            code="not_found",
            message=f"No route or object for {request.method} {request.path}.",
        )
    from django.views.defaults import page_not_found

    return page_not_found(request, exception or Http404())


def handler500(request: HttpRequest) -> HttpResponse:
    if is_api_path(request):
        return internal_error_response()
    from django.views.defaults import server_error

    return server_error(request)


def internal_error_response() -> JsonResponse:
    return error_response(
        status=500,
        code="internal_error",
        message="The server had an error processing the request. It has been logged.",
    )
