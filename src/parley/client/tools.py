"""Python functions as Realtime function tools.

    import asyncio
    from typing import Literal

    from parley.client import RealtimeClient


    async def main() -> None:
        async with RealtimeClient(base_url="http://127.0.0.1:8001", api_key="sk-local") as client:

            @client.tool
            def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
                '''The current weather in a city.

                Args:
                    city: The city's name.
                '''
                return f"18 degrees {unit} and sunny in {city}"

            print(client.tools.definitions)


    asyncio.run(main())

The JSON schema of the parameters comes from the type hints (through pydantic, so dataclasses,
TypedDicts, enums, Literals, Optionals, lists and nested models all work); the description from
the docstring, per-parameter descriptions from its "Args:" section. Calls are validated against
the same model, so the function receives the types it declared. Sync functions run in a worker
thread, async ones on the loop. Whatever goes wrong becomes an error *output* for the model.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

__all__ = ["Tool", "ToolRegistry", "ToolResult", "function_schema"]

_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters)\s*:\s*$")
_ARG_LINE = re.compile(r"^\s+(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {param: description}) from a Google-style docstring."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    i = 0
    while i < len(lines) and not _ARGS_HEADER.match(lines[i]):
        summary.append(lines[i])
        i += 1
    current: str | None = None
    for line in lines[i + 1:]:
        if line.strip() and not line.startswith((" ", "\t")):
            break  # the next section
        m = _ARG_LINE.match(line)
        if m and (current is None or len(line) - len(line.lstrip()) <= 4):
            current = m.group(1).lstrip("*")
            params[current] = m.group(2).strip()
        elif current and line.strip():
            params[current] = f"{params[current]} {line.strip()}".strip()
    description = " ".join(" ".join(summary).split())
    return description, params


def _strip_titles(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_titles(v) for k, v in schema.items() if k != "title" or not isinstance(v, str)}
    if isinstance(schema, list):
        return [_strip_titles(v) for v in schema]
    return schema


def _params_model(fn: Callable[..., Any], name: str, descriptions: dict[str, str]) -> type[BaseModel]:
    signature = inspect.signature(fn)
    try:
        hints = get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to the raw annotations
        hints = {}
    fields: dict[str, Any] = {}
    for pname, param in signature.parameters.items():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        annotation = hints.get(pname, param.annotation)
        if annotation is inspect.Parameter.empty:
            annotation = Any
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (annotation, Field(default, description=descriptions.get(pname)))
    model: type[BaseModel] = create_model(
        f"{name}_parameters", __config__=ConfigDict(extra="ignore", arbitrary_types_allowed=True), **fields)
    return model


def function_schema(fn: Callable[..., Any], name: str | None = None,
                    description: str | None = None) -> tuple[dict[str, Any], type[BaseModel]]:
    """The GA function-tool definition for `fn`, and the pydantic model that validates its arguments."""
    tool_name = name or fn.__name__
    doc_description, param_docs = _parse_docstring(inspect.getdoc(fn))
    model = _params_model(fn, tool_name, param_docs)
    schema = _strip_titles(model.model_json_schema())
    schema.setdefault("properties", {})
    schema["type"] = "object"
    if "required" not in schema:
        schema["required"] = []
    definition = {"type": "function", "name": tool_name, "description": description or doc_description,
                  "parameters": schema}
    return definition, model


@dataclass
class ToolResult:
    output: str
    error: str | None
    arguments: dict[str, Any] | None
    duration_ms: float


class Tool:
    """A registered function."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None, description: str | None = None,
                 timeout: float | None = 30.0) -> None:
        self.fn = fn
        self.definition, self._model = function_schema(fn, name, description)
        self.name: str = self.definition["name"]
        self.timeout = timeout
        self._is_async = inspect.iscoroutinefunction(fn) or (
            callable(fn) and inspect.iscoroutinefunction(type(fn).__call__))

    async def run(self, arguments: str) -> ToolResult:
        """Run with the model's JSON arguments; never raises (errors become the output)."""
        start = time.perf_counter()
        parsed: dict[str, Any] | None = None

        def result(output: str, error: str | None = None) -> ToolResult:
            return ToolResult(output, error, parsed, (time.perf_counter() - start) * 1000)

        try:
            raw = json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            return result(*_error(f"The arguments are not valid JSON: {exc}"))
        if not isinstance(raw, dict):
            return result(*_error("The arguments must be a JSON object."))
        parsed = raw
        try:
            values = self._model.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                                 for e in exc.errors())
            return result(*_error(f"Invalid arguments for {self.name}: {problems}"))
        kwargs = {k: getattr(values, k) for k in type(values).model_fields}
        try:
            if self._is_async:
                call: Awaitable[Any] = self.fn(**kwargs)
            else:
                call = asyncio.to_thread(self.fn, **kwargs)
            value = await asyncio.wait_for(call, self.timeout) if self.timeout else await call
            if inspect.isawaitable(value):  # a sync function that returned a coroutine
                value = await value
        except TimeoutError:
            return result(*_error(f"{self.name} did not finish within {self.timeout:g} s."))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return result(*_error(f"{self.name} failed: {type(exc).__name__}: {exc}"))
        return result(_to_output(value))


def _error(message: str) -> tuple[str, str]:
    return json.dumps({"error": message}), message


def _to_output(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(value, default=_fallback)
    except (TypeError, ValueError):
        return str(value)


def _fallback(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(value)
    return str(value)


class ToolRegistry:
    """The tools of one client, by name."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def add(self, fn: Callable[..., Any] | Tool, *, name: str | None = None, description: str | None = None,
            timeout: float | None = 30.0) -> Tool:
        tool = fn if isinstance(fn, Tool) else Tool(fn, name=name, description=description, timeout=timeout)
        self._tools[tool.name] = tool
        return tool

    def remove(self, name: str) -> None:
        self._tools.pop(name, None)

    def get(self, name: str | None) -> Tool | None:
        return self._tools.get(name) if name else None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def definitions(self) -> list[dict[str, Any]]:
        return [t.definition for t in self._tools.values()]
