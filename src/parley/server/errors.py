"""Error responses: every refusal is `{"error": {"message", "code", ...}}` with a 4xx/5xx status."""

from __future__ import annotations

import re
from typing import Any

from fastapi.responses import JSONResponse


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.code, headers=self.headers, **self.extra)


def error_response(status: int, message: str, code: str, *, headers: dict[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"message": message, "code": code, **extra}},
                        headers=headers)


_KEYLIKE = re.compile(r"\b(sk|rk|ek|sess)-[A-Za-z0-9_\-*.]{6,}")


def scrub(text: str, *secrets: str | None) -> str:
    """Remove anything key-like (and the given secrets) from a message meant for a client or a log."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEYLIKE.sub("[redacted]", text)
