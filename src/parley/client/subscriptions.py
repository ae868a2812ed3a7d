"""Who hears the client's events: `on`/`off` handlers, `events()` streams and `wait_for()`.

Handlers are kept per event type, so an event nobody listens to costs one dict lookup; a handler may
be sync or async (a coroutine it returns is run as a task of the client), and one that raises is
logged without stopping the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

log = logging.getLogger("parley.client")

Handler = Callable[[Any], Any]


class EventStream:
    """An async iterator over the client's events (all, or of some types), from the moment it
    was made until the client closes."""

    _END = object()

    def __init__(self, subs: Subscriptions, types: tuple[str, ...]) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._unsubscribe = subs.subscribe(types, self._queue.put_nowait)
        subs.streams.add(self)

    def _end(self) -> None:
        self._queue.put_nowait(self._END)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Any:
        event = await self._queue.get()
        if event is self._END:
            self._unsubscribe()
            raise StopAsyncIteration
        return event

    def get_nowait(self) -> Any:
        """The next queued event or None."""
        try:
            event = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        return None if event is self._END else event

    def close(self) -> None:
        self._unsubscribe()
        self._end()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class Subscriptions:
    def __init__(self, spawn: Callable[[Any], Any]) -> None:
        self._spawn = spawn
        self._by_type: dict[str, list[Handler]] = {}
        self._all: list[Handler] = []
        self._user: dict[tuple[str, Handler], Callable[[], None]] = {}
        self.streams: set[EventStream] = set()

    def subscribe(self, types: Iterable[str], callback: Handler) -> Callable[[], None]:
        """Call `callback` for events of `types` (none: every event); returns the unsubscriber."""
        kinds = tuple(types)
        if not kinds:
            self._all.append(callback)
        for kind in kinds:
            self._by_type.setdefault(kind, []).append(callback)

        def unsubscribe() -> None:
            if not kinds:
                with contextlib.suppress(ValueError):
                    self._all.remove(callback)
            for kind in kinds:
                listeners = self._by_type.get(kind)
                if listeners is not None:
                    with contextlib.suppress(ValueError):
                        listeners.remove(callback)
                    if not listeners:
                        del self._by_type[kind]

        return unsubscribe

    def wants(self, kind: str) -> bool:
        return kind in self._by_type or bool(self._all)

    def emit(self, event: Any) -> None:
        subs = self._by_type.get(event.type)
        if subs is not None:
            for callback in list(subs):
                self._call(callback, event)
        for callback in list(self._all):
            self._call(callback, event)

    def _call(self, callback: Handler, event: Any) -> None:
        try:
            result = callback(event)
        except Exception:
            log.exception("an event handler for %s failed", getattr(event, "type", event))
            return
        if asyncio.iscoroutine(result):
            self._spawn(result)

    def on(self, type: str, handler: Handler | None = None) -> Any:
        """Call `handler(event)` for every event of `type` ("*" for all); sync or async.

        Without a handler it is a decorator: `@client.on("message")`."""

        def register(fn: Handler) -> Handler:
            self._user[(type, fn)] = self.subscribe(() if type == "*" else (type,), fn)
            return fn

        return register(handler) if handler is not None else register

    def off(self, type: str, handler: Handler) -> None:
        unsubscribe = self._user.pop((type, handler), None)
        if unsubscribe is not None:
            unsubscribe()

    def events(self, *types: str) -> EventStream:
        """An async iterator over events (of `types`, or all) from now on."""
        return EventStream(self, types)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self.events()

    async def wait_for(self, type: str, predicate: Callable[[Any], bool] | None = None,
                       timeout: float | None = 30.0) -> Any:
        """The next event of `type` (for which `predicate` holds)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def check(event: Any) -> None:
            if not future.done() and (predicate is None or predicate(event)):
                future.set_result(event)

        unsubscribe = self.subscribe((type,), check)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            unsubscribe()

    def end_streams(self) -> None:
        for stream in list(self.streams):
            stream._end()
        self.streams.clear()
