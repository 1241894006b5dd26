"""Coded errors the tenancy rules raise (all ApiError, so views need no translation)."""

from __future__ import annotations

from longtune.api.errors import ApiError


def forbidden(code: str, message: str, param: str | None = None) -> ApiError:
    return ApiError(status=403, code=code, message=message, param=param)


def conflict(code: str, message: str, param: str | None = None) -> ApiError:
    return ApiError(status=409, code=code, message=message, param=param)


def bad_request(code: str, message: str, param: str | None = None) -> ApiError:
    return ApiError(status=400, code=code, message=message, param=param)
