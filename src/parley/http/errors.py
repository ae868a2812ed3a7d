"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, for both apps.

A refusal is raised as `ApiError` wherever it is found (a route, a dependency, the body reader,
a middleware's receive) and answered by the handlers `install_error_handlers` registers, so no
route returns an error response of its own. `ApiError` is an `HTTPException`, so FastAPI's body
parsing passes it through unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"

# Codes for the errors Starlette raises itself (no route, wrong method, ...).
_HTTP_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large",
               415: "unsupported_media_type"}


def error_body(status: int, message: str, code: str | None, *, param: str | None = None,
               type: str | None = None, **extra: Any) -> dict[str, Any]:
    kind = type or (SERVER_ERROR if status >= 500 else INVALID_REQUEST)
    return {"error": {"message": message, "type": kind, "param": param, "code": code, **extra}}


def error_response(status: int, message: str, code: str | None, *, headers: Mapping[str, str] | None = None,
                   param: str | None = None, type: str | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(status, message, code, param=param, type=type, **extra), status_code=status,
                        headers=headers)


class ApiError(HTTPException):
    """A refusal: its status, a message for people, a stable code for programs, the parameter at
    fault; `extra` adds fields to the error object (e.g. validation details)."""

    def __init__(self, status: int, message: str, code: str | None, *, param: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(status, message, headers)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type
        self.extra = extra

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.code, headers=self.headers, param=self.param,
                              type=self.type, **self.extra)


def validation_error(exc: RequestValidationError) -> ApiError:
    """FastAPI's validation failure (path, query or a body model) as a 422 naming the first field."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return ApiError(400, "We could not parse the JSON body of your request.", "invalid_json")
    details = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", ""))[:300],
                "type": str(e.get("type", ""))} for e in errors[:20]]
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    where = ".".join(x for x in first["loc"] if x != "body") or None
    return ApiError(422, f"Invalid {where or 'request'}: {first['msg']}", "invalid_request", param=where,
                    details=details)


def install_error_handlers(app: FastAPI, *, redact: Callable[[str], str] = str) -> None:
    """Every error the app answers, in one shape. `redact` cleans what a crash logs (secrets)."""

    async def api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return exc.response()

    async def invalid(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return validation_error(exc).response()

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        message = exc.detail if isinstance(exc.detail, str) and len(exc.detail) > 10 else (
            f"The request failed ({exc.status_code} {exc.detail}).")
        return error_response(exc.status_code, message, _HTTP_CODES.get(exc.status_code, "http_error"),
                              headers=dict(exc.headers or {}))

    async def crash(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error: %s", redact(repr(exc)), exc_info=exc)
        return error_response(500, "Internal server error.", "internal_error")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, crash)
