"""Reading request bodies, the same way at every door of both apps.

- `BodyLimit` (ASGI middleware) refuses a body over the limit with 413: by its Content-Length
  before anything is read, or as soon as the streamed bytes pass it.
- `parse_json` reads JSON text with a nesting bound, checked before `json.loads` runs: the C
  parser recurses once per level, and a body nested a few thousand deep would otherwise end in
  a `RecursionError` (a 500 that also drops the client's keep-alive connection). The check
  costs less than the parse on large bodies (benchmarks/http_body.py).
- `JsonBodyRoute` makes FastAPI's own parsing of body models go through `parse_json` too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError

# Deeper than any real body (a session's tool schemas nest a few tens at most).
MAX_JSON_DEPTH = 64

_NOT_SYNTAX = bytes(b for b in range(256) if b not in b'"[]{}')


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"The request body is larger than {limit} bytes.", "body_too_large")


class BodyLimit:
    """Refuses request bodies over `limit` bytes (`limit_for(path)` may give a path its own)."""

    def __init__(self, app: ASGIApp, limit: int, limit_for: Callable[[str], int | None] | None = None) -> None:
        self.app, self.limit, self.limit_for = app, limit, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = (self.limit_for(scope["path"]) if self.limit_for else None) or self.limit
        length = Headers(scope=scope).get("content-length")
        if length is not None:
            if not length.isdigit():
                refusal = ApiError(400, "The Content-Length header is not a number.", "invalid_request")
                await refusal.response()(scope, receive, send)
                return
            if int(length) > limit:
                await too_large(limit).response()(scope, receive, send)
                return
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)  # raised in whatever reads the body, answered by the handler
            return message

        await self.app(scope, receive_limited, send)


def json_depth_error(data: bytes, limit: int = MAX_JSON_DEPTH) -> str | None:
    """Why `data` cannot be JSON within `limit` levels of nesting, or None when it may be.

    Only C-speed bytes operations, never recursion. Escaped backslashes and quotes go first, so
    every `"` left delimits a string; of the rest only quotes and brackets are kept (UTF-8 never
    hides an ASCII byte in a longer character). When each string is then an empty `""`, no string
    holds a bracket, and the brackets are the structure; otherwise the strings are cut out. Each
    pass removes the innermost pairs. Valid JSON always pairs up fully, so a pass that removes
    nothing means the brackets are unbalanced (not JSON at all). Where the text is not JSON, the
    parser stops at its first error, before any nesting this view could get wrong."""
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    syntax = unescaped.translate(None, _NOT_SYNTAX)
    if b'"' in syntax.replace(b'""', b""):  # some string holds a bracket
        brackets = b"".join(unescaped.split(b'"')[::2]).translate(None, _NOT_SYNTAX)
    else:
        brackets = syntax.translate(None, b'"')
    for _ in range(limit):
        if not brackets:
            return None
        # One level per pass: a pair removed this pass must not join the two brackets around it.
        reduced = brackets.replace(b"[]", b"\0").replace(b"{}", b"\0").replace(b"\0", b"")
        if reduced == brackets:
            return "its brackets do not pair up"
        brackets = reduced
    return f"it nests deeper than {limit} levels" if brackets else None


def parse_json(raw: bytes | str, *, param: str | None = None, what: str = "the JSON body of your request") -> Any:
    """JSON text (UTF-8) to Python, or ApiError(400, invalid_json) saying what is wrong."""
    def bad(why: str) -> ApiError:
        return ApiError(400, f"We could not parse {what}: {why}.", "invalid_json", param=param)

    try:
        text, data = (raw.decode("utf-8"), raw) if isinstance(raw, bytes) else (raw, raw.encode("utf-8", "surrogatepass"))
    except UnicodeDecodeError:
        raise bad("it is not UTF-8 text") from None
    if (why := json_depth_error(data)) is not None:
        raise bad(why)
    try:
        return json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and ints too long to convert
        raise bad(str(exc)) from None


async def read_json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object (an empty body is `{}`), or ApiError(400)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", "invalid_type")
    return body


class _JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class JsonBodyRoute(APIRoute):
    """A route whose body models are read by `parse_json` (FastAPI calls `request.json()`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            return await handler(_JsonRequest(request.scope, request.receive))

        return bounded
