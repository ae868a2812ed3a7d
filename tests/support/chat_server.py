"""A small, deterministic OpenAI-compatible Chat Completions server for tests.

A real HTTP server (FastAPI on uvicorn, 127.0.0.1, a free port):

    with run_chat_server() as url:          # url == "http://127.0.0.1:PORT/v1"
        client = OpenAI(base_url=url, api_key="test")
        ...
        url.requests                        # the JSON bodies it received, in order

    async with arun_chat_server() as url:   # the same, served from the running event loop
        ...

Behaviour (the same for `stream: true` (SSE) and plain JSON):

* The reply echoes the last user message: "You said: <text>". Without a user message:
  "Hello from the test chat server."
* If the request has tools, `tool_choice` isn't "none", and the last message is a user message
  that mentions a tool (a word of its name other than get/set/...: "weather" for get_weather), or
  tool_choice forces a function, the reply is a call of that tool. Arguments are filled from the
  user's words: a string parameter named city/location/place/... gets the words after "in"/"for"
  ("weather in Paris" -> {"city": "Paris"}), other strings the whole text, numbers the first
  number in the text. The call id is "call_<request number>".
* After a `tool` message the reply uses it: "The <tool name> result is: <output>".
* `max_tokens` cuts the reply to that many words (finish_reason "length").
* Special models: "error-<status>" answers that HTTP status with an OpenAI error body;
  "slow-<seconds>" waits that long before answering; "drip-<seconds>" streams its words that many
  seconds apart (a reply still being written); "broken-stream" sends one delta, then an
  error event; "no-stream" answers with one JSON completion even when asked to stream.

Requests are recorded (`url.requests`, `url.headers`) so tests can assert on what a client sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

__all__ = ["ChatServer", "ChatServerURL", "arun_chat_server", "plan_reply", "run_chat_server"]

_STOP_WORDS = {"get", "set", "do", "make", "run", "the", "a", "an", "fetch", "lookup", "look", "up", "call",
               "tool", "find", "current", "for", "of", "to", "and", "by", "with", "info", "data"}
_PLACE_PARAMS = {"city", "location", "place", "where", "country", "town", "region", "destination", "address"}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _tool_keywords(name: str) -> list[str]:
    words = [w for w in re.split(r"[_\-\s]+|(?<=[a-z])(?=[A-Z])", name) if w]
    return [w.lower() for w in words if w.lower() not in _STOP_WORDS]


def _fill_args(parameters: dict[str, Any], text: str) -> dict[str, Any]:
    props: dict[str, Any] = (parameters or {}).get("properties") or {}
    args: dict[str, Any] = {}
    place = re.search(r"\b(?:in|for|at|near)\s+([A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*|[\w'-]+)", text)
    number = re.search(r"-?\d+(?:\.\d+)?", text)
    for key, schema in props.items():
        typ = (schema or {}).get("type", "string")
        if typ in ("number", "integer"):
            value = float(number.group()) if number else 0
            args[key] = int(value) if typ == "integer" else value
        elif typ == "boolean":
            args[key] = True
        elif "enum" in (schema or {}):
            args[key] = schema["enum"][0]
        elif key.lower() in _PLACE_PARAMS and place:
            args[key] = place.group(1).strip()
        else:
            args[key] = text.strip()
    return args


def plan_reply(body: dict[str, Any], request_number: int = 1) -> dict[str, Any]:
    """What the server answers to `body`: {"text": ...} or {"tool_call": {"id", "name", "arguments"}}."""
    messages = body.get("messages") or []
    tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
    choice = body.get("tool_choice", "auto")
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        name = "tool"
        for m in messages:
            for call in m.get("tool_calls") or []:
                if call.get("id") == last.get("tool_call_id"):
                    name = call["function"]["name"]
        return {"text": f"The {name} result is: {_text_of(last.get('content'))}"}
    user_text = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), None)
    if tools and choice != "none" and last.get("role") == "user":
        chosen = None
        if isinstance(choice, dict):
            forced = (choice.get("function") or {}).get("name")
            chosen = next((t for t in tools if t["function"]["name"] == forced), None)
        if chosen is None and user_text:
            low = user_text.lower()
            for t in tools:
                keys = _tool_keywords(t["function"]["name"])
                if any(re.search(rf"\b{re.escape(k)}", low) for k in keys):
                    chosen = t
                    break
        if chosen is None and choice == "required":
            chosen = tools[0]
        if chosen is not None:
            fn = chosen["function"]
            args = _fill_args(fn.get("parameters") or {}, user_text or "")
            return {"tool_call": {"id": f"call_{request_number}", "name": fn["name"], "arguments": json.dumps(args)}}
    if user_text is None:
        return {"text": "Hello from the test chat server."}
    return {"text": f"You said: {user_text}"}


class ChatServerURL(str):
    """The server's base URL ("http://127.0.0.1:PORT/v1"), carrying what the server recorded."""

    server: ChatServer

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.server.requests

    @property
    def headers(self) -> list[dict[str, str]]:
        return self.server.headers


class ChatServer:
    def __init__(self, model_name: str = "test-chat") -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.model_name = model_name
        self.app = self._build_app()

    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [{"id": self.model_name, "object": "model", "owned_by": "parley-tests"}]}

        @app.post("/v1/chat/completions")
        async def completions(request: Request) -> Response:
            body = await request.json()
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            number = len(self.requests)
            model = str(body.get("model", ""))
            if model.startswith("error-"):
                status = int(model.split("-", 1)[1])
                return JSONResponse({"error": {"message": f"simulated failure {status}", "type": "server_error",
                                               "code": None, "param": None}}, status_code=status)
            if model.startswith("slow-"):
                deadline = time.monotonic() + float(model.split("-", 1)[1])
                while time.monotonic() < deadline:  # stop waiting when the client gives up
                    if await request.is_disconnected():
                        return Response(status_code=499)
                    await asyncio.sleep(0.02)
            plan = plan_reply(body, number)
            completion_id = f"chatcmpl-{number}"
            if body.get("stream") and model != "no-stream":
                return StreamingResponse(self._stream(body, plan, completion_id), media_type="text/event-stream")
            return JSONResponse(self._completion(body, plan, completion_id))

        return app

    @staticmethod
    def _words(body: dict[str, Any], text: str) -> tuple[list[str], str]:
        words = re.findall(r"\S+\s*", text)
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(limit, int) and len(words) > limit:
            return words[:limit], "length"
        return words, "stop"

    def _completion(self, body: dict[str, Any], plan: dict[str, Any], cid: str) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None}
        finish = "tool_calls"
        if "text" in plan:
            words, finish = self._words(body, plan["text"])
            message["content"] = "".join(words)
        else:
            call = plan["tool_call"]
            message["tool_calls"] = [{"id": call["id"], "type": "function",
                                      "function": {"name": call["name"], "arguments": call["arguments"]}}]
        return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": body.get("model"),
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}

    async def _stream(self, body: dict[str, Any], plan: dict[str, Any], cid: str) -> AsyncIterator[str]:
        base = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": body.get("model")}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

        yield chunk({"role": "assistant", "content": ""})
        if body.get("model") == "broken-stream":
            yield chunk({"content": "Partial "})
            yield "data: " + json.dumps({"error": {"message": "simulated stream failure", "type": "server_error"}}) + "\n\n"
            return
        model = str(body.get("model", ""))
        gap = float(model.split("-", 1)[1]) if model.startswith("drip-") else 0.0
        if "text" in plan:
            words, finish = self._words(body, plan["text"])
            for w in words:
                yield chunk({"content": w})
                await asyncio.sleep(gap)
            yield chunk({}, finish)
        else:
            call = plan["tool_call"]
            yield chunk({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                         "function": {"name": call["name"], "arguments": ""}}]})
            args = call["arguments"]
            step = max(1, len(args) // 3)
            for i in range(0, len(args), step):
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + step]}}]})
            yield chunk({}, "tool_calls")
        if (body.get("stream_options") or {}).get("include_usage"):
            yield "data: " + json.dumps({**base, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5,
                                                                         "total_tokens": 15}}) + "\n\n"
        yield "data: [DONE]\n\n"


def _bind() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # leave the test runner's signal handlers alone
        yield


def _make(server: ChatServer, sock: socket.socket) -> tuple[_QuietServer, ChatServerURL]:
    config = uvicorn.Config(server.app, log_level="warning", lifespan="off", access_log=False,
                            timeout_graceful_shutdown=1)
    port = sock.getsockname()[1]
    url = ChatServerURL(f"http://127.0.0.1:{port}/v1")
    url.server = server
    return _QuietServer(config), url


@contextlib.contextmanager
def run_chat_server(server: ChatServer | None = None) -> Iterator[ChatServerURL]:
    """Serve a `ChatServer` from a background thread for the duration of the block."""
    server = server or ChatServer()
    sock = _bind()
    uv, url = _make(server, sock)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True, name="chat-server")
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test chat server did not start")
        time.sleep(0.01)
    try:
        yield url
    finally:
        uv.should_exit = True
        thread.join(timeout=5)
        sock.close()


@contextlib.asynccontextmanager
async def arun_chat_server(server: ChatServer | None = None) -> AsyncIterator[ChatServerURL]:
    """Serve a `ChatServer` from the running event loop for the duration of the block."""
    server = server or ChatServer()
    sock = _bind()
    uv, url = _make(server, sock)
    task = asyncio.create_task(uv.serve(sockets=[sock]))
    try:
        while not uv.started:
            if task.done():
                task.result()
                raise RuntimeError("the test chat server did not start")
            await asyncio.sleep(0.01)
        yield url
    finally:
        uv.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        sock.close()
