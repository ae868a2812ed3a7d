"""The protocol's `error` event and the translation of validation failures into it.

OpenAI reports malformed client input as an `error` server event (the session goes on), with
codes such as `missing_required_parameter`, `unknown_parameter`, `invalid_type` and
`invalid_value`, and `param` as a dotted path. We produce the same shapes.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .ids import event_id as _event_id

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


@dataclass(frozen=True)
class ProtocolError(Exception):
    """A client mistake, carried to the point where it becomes an `error` event."""

    code: str
    message: str
    param: str | None = None
    type: str = INVALID_REQUEST

    def __str__(self) -> str:
        return self.message


def error_event(
    code: str | None,
    message: str,
    *,
    param: str | None = None,
    client_event_id: str | None = None,
    type: str = INVALID_REQUEST,
) -> dict[str, Any]:
    return {
        "type": "error",
        "event_id": _event_id(),
        "error": {
            "type": type,
            "code": code,
            "message": message,
            "param": param,
            "event_id": client_event_id,
        },
    }


def error_from(exc: ProtocolError, client_event_id: str | None = None) -> dict[str, Any]:
    return error_event(exc.code, exc.message, param=exc.param, client_event_id=client_event_id, type=exc.type)


# Literal values that pydantic puts into error locations for tagged unions; they are not
# parameter names, so they are dropped from `param`.
_UNION_TAGS = frozenset(
    {
        "message", "function_call", "function_call_output", "item_reference",
        "input_text", "input_audio", "input_image", "output_text", "output_audio",
        "server_vad", "semantic_vad", "function", "mcp", "audio/pcm", "audio/pcmu", "audio/pcma",
        "retention_ratio", "realtime", "transcription", "system", "user", "assistant",
        "str", "int", "float", "dict[str,any]", "list[...]", "literal['auto']", "literal['inf']",
        "literal['auto','disabled']", "literal['none','auto','required']", "none",
    }
)


def _param(loc: tuple[int | str, ...], prefix: str | None) -> str | None:
    parts: list[str] = [prefix] if prefix else []
    for part in loc:
        if isinstance(part, int):
            if parts:
                parts[-1] = f"{parts[-1]}[{part}]"
            continue
        if part.replace(" ", "").lower() in _UNION_TAGS or part.startswith(("function-", "tagged-union[", "union[", "constrained-")):
            continue
        parts.append(part)
    return ".".join(parts) or None


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a decimal", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


# Client values quoted in messages: bounded in size and depth (a deeply nested value would make
# the builtin repr() raise RecursionError).
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = 100


_EXPECTED = {"model": "an object", "dict": "an object", "list": "an array", "int": "an integer",
             "float": "a decimal", "string": "a string", "bool": "a boolean", "bytes": "bytes"}


def from_validation_error(exc: ValidationError, *, prefix: str | None = None) -> ProtocolError:
    """The first pydantic error as OpenAI would word it."""
    errors = exc.errors(include_url=False)
    if not errors:
        return ProtocolError("invalid_value", "Invalid value.", prefix)
    err = errors[0]
    kind = err["type"]
    param = _param(tuple(err["loc"]), prefix)
    shown = f"'{param}'" if param else "value"
    value = err.get("input")
    if kind == "missing":
        return ProtocolError("missing_required_parameter", f"Missing required parameter: {shown}.", param)
    if kind == "extra_forbidden":
        return ProtocolError("unknown_parameter", f"Unknown parameter: {shown}.", param)
    if kind in ("literal_error", "enum", "union_tag_invalid"):
        ctx = err.get("ctx", {})
        expected = ctx.get("expected") or ctx.get("expected_tags")
        hint = f" Supported values are: {expected}." if expected else ""
        if kind == "union_tag_invalid":
            param = f"{param}.type" if param else "type"
            value, shown = ctx.get("tag"), f"'{param}'"
        return ProtocolError("invalid_value", f"Invalid value: {_QUOTE.repr(value)} for {shown}.{hint}", param)
    if kind == "union_tag_not_found":
        tag = err.get("ctx", {}).get("discriminator", "'type'")
        return ProtocolError("missing_required_parameter", f"Missing required parameter: {tag} in {shown}.", param)
    if kind.endswith(("_type", "_parsing")) or kind in ("model_type", "model_attributes_type", "dict_type"):
        want = _EXPECTED.get(kind.split("_")[0], kind.split("_")[0])
        return ProtocolError(
            "invalid_type",
            f"Invalid type for {shown}: expected {want}, but got {_describe(value)} instead.",
            param,
        )
    ctx = err.get("ctx", {})
    if kind.startswith(("greater_than", "less_than", "too_long", "too_short", "string_too")):
        return ProtocolError("invalid_value", f"Invalid {shown}: {err['msg']} (got {_QUOTE.repr(value)}).", param)
    if kind == "value_error":
        reason = str(ctx.get("error", err["msg"]))
        return ProtocolError("invalid_value", f"Invalid {shown}: {reason}", param)
    return ProtocolError("invalid_value", f"Invalid {shown}: {err['msg']}.", param)
