"""Several named realtime connections with their own configs (the copilot's microphone and speaker).

    import asyncio

    from parley.client import ConnectionManager


    async def main() -> None:
        # on `parley engine --port 8001` (on `parley serve`: key_provider=server_key_provider(url))
        manager = ConnectionManager(base_url="http://127.0.0.1:8001", api_key="sk-local")
        manager.add("mic", session={"instructions": "Suggest what I could say."})  # transcription + assistant
        manager.add("speaker", intent="transcription")                             # transcription only
        manager.inject("speaker", into="mic", label="SYSTEM_AUDIO_TRANSCRIPT")
        async with manager:
            print(manager.status())  # {'mic': 'connected', 'speaker': 'connected'}


    asyncio.run(main())

`inject` copies each final transcript of one connection into another's conversation as a
message (`conversation.item.create`), so the assistant there knows what was said elsewhere; with
`respond=True` it also asks that assistant to answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from parley.client.client import RealtimeClient
from parley.client.events import TranscriptionCompleted

__all__ = ["ConnectionManager", "Injection"]


@dataclass
class Injection:
    source: str
    target: str
    role: Literal["user", "system"]
    template: str
    respond: bool
    count: int = 0


class ConnectionManager:
    """Named `RealtimeClient`s sharing defaults (URL, key, key provider, transport, policy)."""

    def __init__(self, **defaults: Any) -> None:
        self.defaults = defaults
        self.clients: dict[str, RealtimeClient] = {}
        self.injections: list[Injection] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def add(self, name: str, **options: Any) -> RealtimeClient:
        """A new named connection; `options` override the defaults (RealtimeClient's arguments)."""
        if name in self.clients:
            raise ValueError(f"a connection named {name!r} exists already")
        client = RealtimeClient(**{**self.defaults, **options, "name": name})
        self.clients[name] = client
        return client

    def __getitem__(self, name: str) -> RealtimeClient:
        return self.clients[name]

    def __contains__(self, name: object) -> bool:
        return name in self.clients

    def __iter__(self) -> Any:
        return iter(self.clients.items())

    def inject(self, source: str, into: str, *, label: str | None = None, role: Literal["user", "system"] = "user",
               template: str | None = None, respond: bool = False) -> Injection:
        """Copy `source`'s final input transcripts into `into`'s conversation.

        The message text is `template` formatted with `label`, `text` and `source`
        (default "{label}: {text}", label defaulting to the source's name)."""
        src, dst = self.clients[source], self.clients[into]
        injection = Injection(source, into, role, template or "{label}: {text}", respond)
        name = label or source

        def on_transcript(event: TranscriptionCompleted) -> None:
            text = event.transcript.strip()
            if not text:
                return
            message = injection.template.format(label=name, text=text, source=source)
            injection.count += 1
            task = asyncio.ensure_future(self._deliver(dst, message, injection))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        src.on("conversation.item.input_audio_transcription.completed", on_transcript)
        self.injections.append(injection)
        return injection

    async def _deliver(self, target: RealtimeClient, text: str, injection: Injection) -> None:
        await target.add_item({"type": "message", "role": injection.role,
                               "content": [{"type": "input_text", "text": text}]})
        if injection.respond:
            # one response at a time in the default conversation: wait for a quiet moment
            for _ in range(600):
                if target.active_response_id is None:
                    break
                await asyncio.sleep(0.05)
            await target.create_response()

    # -- lifecycle ----------------------------------------------------------------------------

    async def connect(self, *names: str) -> None:
        """Connect the named connections (all by default), concurrently."""
        chosen = [self.clients[n] for n in (names or tuple(self.clients))]
        results = await asyncio.gather(*(c.connect() for c in chosen), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.close(*(names or tuple(self.clients)))
            raise errors[0]

    async def close(self, *names: str) -> None:
        chosen = [self.clients[n] for n in (names or tuple(self.clients))]
        await asyncio.gather(*(c.close() for c in chosen), return_exceptions=True)
        if not names:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> ConnectionManager:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def status(self) -> dict[str, str]:
        return {name: client.state for name, client in self.clients.items()}

    def on(self, type: str, handler: Callable[[str, Any], Any]) -> None:
        """`handler(name, event)` for events of `type` on every connection."""
        for name, client in self.clients.items():
            client.on(type, _bind(handler, name))

    async def events(self, *types: str) -> AsyncIterator[tuple[str, Any]]:
        """(connection name, event) from every connection, as they come."""
        queue: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()
        streams = {name: client.events(*types) for name, client in self.clients.items()}

        async def pump(name: str, stream: Any) -> None:
            async for event in stream:
                queue.put_nowait((name, event))

        tasks = [asyncio.ensure_future(pump(n, s)) for n, s in streams.items()]
        done = asyncio.ensure_future(asyncio.gather(*tasks, return_exceptions=True))
        done.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (entry := await queue.get()) is not None:
                yield entry
        finally:
            for stream in streams.values():
                stream.close()
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await done


def _bind(handler: Callable[[str, Any], Any], name: str) -> Callable[[Any], Any]:
    def call(event: Any) -> Any:
        return handler(name, event)

    return call
