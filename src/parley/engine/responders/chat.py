"""A responder backed by any OpenAI-compatible Chat Completions endpoint (OpenAI, Ollama, vLLM, ...).

The realtime conversation is mapped to chat messages: the session instructions become the system
message, user audio becomes its transcript, assistant audio its transcript, `function_call` items
assistant `tool_calls`, and `function_call_output` items `tool` messages. The reply is streamed
(server-sent events) and yielded as text deltas; streamed tool calls are accumulated by index and
yielded as complete `FunctionCall`s at the end. Any failure of the endpoint raises
`ResponderError` with a message that says what went wrong.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from parley.protocol.items import item_text

from .base import FunctionCall, ResponderError, ResponseChunk, ResponseRequest, TextDelta

__all__ = ["ChatResponder", "ResponderError", "chat_messages", "chat_tool_choice", "chat_tools"]

INAUDIBLE = "(inaudible)"


def _user_content(item: dict[str, Any]) -> str | list[dict[str, Any]]:
    text = item_text(item)
    images = [p for p in item.get("content") or [] if isinstance(p, dict) and p.get("type") == "input_image"]
    if not images:
        return text or INAUDIBLE
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for p in images:
        image: dict[str, Any] = {"url": p.get("image_url", "")}
        if p.get("detail"):
            image["detail"] = p["detail"]
        parts.append({"type": "image_url", "image_url": image})
    return parts


def chat_messages(instructions: str | None, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat Completions messages for a realtime conversation.

    A user audio message without a transcript (transcription failed) becomes "(inaudible)"; an
    assistant message without words (truncated before any was heard) is left out. Function calls
    without an output and outputs without a call are not representable in Chat Completions: the
    former are left out, the latter become a user note.
    """
    messages: list[dict[str, Any]] = []
    if instructions and instructions.strip():
        messages.append({"role": "system", "content": instructions})
    answered = {str(i.get("call_id")) for i in items if i.get("type") == "function_call_output"}
    called: set[str] = set()
    last_was_call = False
    for n, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "message":
            last_was_call = False
            role = item.get("role")
            if role == "user":
                messages.append({"role": "user", "content": _user_content(item)})
            elif role == "assistant":
                text = item_text(item)
                if text:
                    messages.append({"role": "assistant", "content": text})
            elif role == "system":
                text = item_text(item)
                if text:
                    messages.append({"role": "system", "content": text})
        elif kind == "function_call":
            call_id = str(item.get("call_id") or f"call_{n}")
            if call_id not in answered:
                continue
            called.add(call_id)
            call = {"id": call_id, "type": "function",
                    "function": {"name": item.get("name", ""), "arguments": item.get("arguments") or "{}"}}
            prev = messages[-1] if messages else None
            if prev is not None and prev["role"] == "assistant" and (last_was_call or "tool_calls" not in prev):
                # the function calls of one response go into one assistant message
                prev.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            last_was_call = True
        elif kind == "function_call_output":
            last_was_call = False
            call_id = str(item.get("call_id"))
            output = item.get("output")
            output = output if isinstance(output, str) else json.dumps(output)
            if call_id in called:
                messages.append({"role": "tool", "tool_call_id": call_id, "content": output})
            else:
                messages.append({"role": "user", "content": f"(result of an earlier tool call: {output})"})
    return messages


def chat_tools(tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """GA realtime function tools -> Chat Completions tools (other tool types are dropped)."""
    out = []
    for t in tools:
        if t.get("type", "function") != "function" or not t.get("name"):
            continue
        fn: dict[str, Any] = {"name": t["name"]}
        if t.get("description"):
            fn["description"] = t["description"]
        fn["parameters"] = t.get("parameters") or {"type": "object", "properties": {}}
        out.append({"type": "function", "function": fn})
    return out


def chat_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any] | None:
    """GA tool_choice -> Chat Completions tool_choice (None: leave it out)."""
    if isinstance(choice, str):
        return choice if choice in ("auto", "none", "required") else None
    if choice.get("type") == "function":
        name = choice.get("name") or (choice.get("function") or {}).get("name")
        if name:
            return {"type": "function", "function": {"name": name}}
    return None


def _error_detail(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300]
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"])[:300]
    if isinstance(err, str):
        return err[:300]
    return text[:300]


class _ToolCalls:
    """Accumulates streamed tool-call fragments by index."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def add(self, fragments: Sequence[dict[str, Any]]) -> None:
        for pos, frag in enumerate(fragments):
            if not isinstance(frag, dict):
                continue
            index = frag.get("index")
            index = index if isinstance(index, int) else pos
            acc = self._calls.setdefault(index, {"id": None, "name": "", "arguments": ""})
            if frag.get("id"):
                acc["id"] = str(frag["id"])
            fn = frag.get("function") or {}
            if fn.get("name"):
                acc["name"] = str(fn["name"])
            args = fn.get("arguments")
            if isinstance(args, str):
                acc["arguments"] += args
            elif isinstance(args, dict):  # some servers send the arguments as an object
                acc["arguments"] = json.dumps(args)

    def calls(self) -> list[FunctionCall]:
        return [FunctionCall(c["name"], c["arguments"] or "{}", c["id"])
                for _, c in sorted(self._calls.items()) if c["name"]]


class ChatResponder:
    """Writes responses with an OpenAI-compatible Chat Completions endpoint.

    `base_url` is the API root, e.g. "http://127.0.0.1:11434/v1" (Ollama) or
    "https://api.openai.com/v1"; "/chat/completions" is appended unless already there.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        model: str,
        timeout: float = 60.0,
        extra_body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        base = base_url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else f"{base}/chat/completions"
        self.api_key = api_key
        self.model = model
        self.timeout = timeout
        self.extra_body = dict(extra_body or {})
        self.headers = dict(headers or {})
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- request -------------------------------------------------------------------------------

    def build_body(self, request: ResponseRequest) -> dict[str, Any]:
        """The JSON body posted for `request`."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": chat_messages(request.instructions, request.items),
            "stream": True,
        }
        tools = chat_tools(request.tools)
        if tools:
            body["tools"] = tools
            choice = chat_tool_choice(request.tool_choice)
            if choice is not None:
                body["tool_choice"] = choice
        if isinstance(request.max_output_tokens, int) and request.max_output_tokens > 0:  # not "inf"
            body["max_tokens"] = request.max_output_tokens
        body.update(self.extra_body)
        return body

    def _client_for_loop(self) -> httpx.AsyncClient:
        # One pooled client per event loop: keeps connections (and TLS sessions) warm between turns.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._loop is not loop:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)))
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> ChatResponder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- response ------------------------------------------------------------------------------

    async def respond(self, request: ResponseRequest) -> AsyncIterator[ResponseChunk]:
        body = self.build_body(request)
        headers = {"Accept": "text/event-stream", **self.headers}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        client = self._client_for_loop()
        calls = _ToolCalls()
        try:
            async with client.stream("POST", self.url, json=body, headers=headers) as resp:
                if resp.status_code >= 400:
                    detail = _error_detail(await resp.aread())
                    raise ResponderError(f"chat endpoint {self.url} returned HTTP {resp.status_code}: {detail}")
                if "text/event-stream" not in resp.headers.get("content-type", ""):
                    # a server that ignored "stream": a single JSON completion
                    data = self._json(await resp.aread())
                    for chunk in self._from_completion(data):
                        yield chunk
                    return
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, comments, "event:" lines
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    if not payload:
                        continue
                    data = self._json(payload.encode())
                    for choice in data.get("choices") or []:
                        delta = choice.get("delta") or {}
                        content = delta.get("content")
                        if isinstance(content, str) and content:
                            yield TextDelta(content)
                        if delta.get("tool_calls"):
                            calls.add(delta["tool_calls"])
        except httpx.TimeoutException as e:
            raise ResponderError(f"chat endpoint {self.url} timed out after {self.timeout:g} s") from e
        except httpx.HTTPError as e:
            raise ResponderError(f"chat endpoint {self.url} failed: {type(e).__name__}: {e}") from e
        for call in calls.calls():
            yield call

    def _json(self, raw: bytes) -> dict[str, Any]:
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise ResponderError(f"chat endpoint {self.url} sent invalid JSON: {raw[:200]!r}") from e
        if not isinstance(data, dict):
            raise ResponderError(f"chat endpoint {self.url} sent unexpected data: {raw[:200]!r}")
        if data.get("error"):
            raise ResponderError(f"chat endpoint {self.url} reported an error: {_error_detail(raw)}")
        return data

    def _from_completion(self, data: dict[str, Any]) -> list[ResponseChunk]:
        out: list[ResponseChunk] = []
        calls = _ToolCalls()
        for choice in (data.get("choices") or [])[:1]:
            message = choice.get("message") or {}
            if isinstance(message.get("content"), str) and message["content"]:
                out.append(TextDelta(message["content"]))
            if message.get("tool_calls"):
                calls.add(message["tool_calls"])
        out.extend(calls.calls())
        return out
