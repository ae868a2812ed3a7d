"""Responses as the client follows them: the handle a `response.create` returns, the request until
the server answers it, and each response in progress with its latency and its tools."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from parley.client.policy import TurnLatency
from parley.client.tools import ToolResult
from parley.protocol.conversation import ConversationState, Item

# The metadata key a `response.create` is tagged with, so its `response.created` is recognised.
TAG_KEY = "parley_request"


class ResponseHandle:
    """A `response.create` this client sent: await it for the final response object."""

    def __init__(self, conversation: ConversationState, tag: str, *, out_of_band: bool) -> None:
        loop = asyncio.get_running_loop()
        self._conversation = conversation
        self.tag = tag
        self.out_of_band = out_of_band
        self.id: str | None = None
        self.response: dict[str, Any] | None = None
        self._created: asyncio.Future[str] = loop.create_future()
        self._done: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.items: list[Item] = []

    async def created(self, timeout: float | None = 30.0) -> str:
        return await asyncio.wait_for(asyncio.shield(self._created), timeout)

    async def done(self, timeout: float | None = 60.0) -> dict[str, Any]:
        """The `response` object of `response.done` (raises if the server refused the request)."""
        return await asyncio.wait_for(asyncio.shield(self._done), timeout)

    def __await__(self) -> Any:
        return self.done().__await__()

    @property
    def status(self) -> str | None:
        status = (self.response or {}).get("status")
        return status if isinstance(status, str) else None

    @property
    def text(self) -> str:
        """The words of the response's messages (text or audio transcript)."""
        items = self.items
        if not items and self.id is not None:
            items = [i for i in self._conversation if i.response_id == self.id]
        return " ".join(i.text for i in items if i.type == "message" and i.text)

    def _set_created(self, response_id: str) -> None:
        self.id = response_id
        if not self._created.done():
            self._created.set_result(response_id)

    def _set_done(self, response: dict[str, Any]) -> None:
        self.response = response
        if not self._done.done():
            self._done.set_result(response)

    def _fail(self, error: Exception) -> None:
        for fut in (self._created, self._done):
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # retrieved: no "never retrieved" warning when nobody awaits


class PendingRequest:
    """A `response.create` the server has not answered yet (re-sent after a reconnect)."""

    __slots__ = ("event", "handle", "kind", "sent_at")

    def __init__(self, event: dict[str, Any], handle: ResponseHandle, kind: str) -> None:
        self.event = event
        self.handle = handle
        self.kind = kind
        self.sent_at = time.monotonic()


class ResponseRun:
    """A response in progress: who asked for it, how fast it came, the tools it called."""

    __slots__ = ("handle", "id", "out_of_band", "tools", "turn")

    def __init__(self, response_id: str, out_of_band: bool, handle: ResponseHandle | None,
                 turn: TurnLatency) -> None:
        self.id = response_id
        self.out_of_band = out_of_band
        self.handle = handle
        self.turn = turn
        self.tools: dict[str, asyncio.Task[ToolResult]] = {}
