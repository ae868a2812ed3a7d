"""A WebSocket relay that fails on purpose, for testing clients against a real upstream.

    import asyncio

    from parley.client import RealtimeClient
    from parley.client.relay import FaultRelay


    async def main() -> None:
        async with FaultRelay("http://127.0.0.1:8001") as relay:  # `parley engine --port 8001`
            async with RealtimeClient(base_url=relay.url, api_key="sk-local") as client:
                back = asyncio.ensure_future(client.wait_for("reconnected"))
                relay.cut()         # drop every connection now (the client sees code 1006)
                await back
                relay.refuse(3)     # answer the next 3 upgrades with HTTP 503
                relay.cut_when(lambda e: e["type"] == "response.output_audio.delta")  # drop mid-response
                print(len(relay.attempts), "upgrades")


    asyncio.run(main())

It relays `/v1/realtime...` WebSocket upgrades (path, query and `Authorization` unchanged) to
the upstream, and answers refused upgrades with the upstream's own status and body. Every
upgrade attempt is recorded with its time and outcome in `attempts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response

__all__ = ["Attempt", "FaultRelay"]


@dataclass(frozen=True)
class Attempt:
    at: float  # time.monotonic()
    status: int  # 101 when relayed
    path: str


class FaultRelay:
    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        scheme, netloc, _, _, _ = urlsplit(upstream)
        self._upstream = urlunsplit(({"http": "ws", "https": "wss"}.get(scheme, scheme), netloc, "", "", ""))
        self._host = host
        self._port = port
        self._server: Server | None = None
        self._pending: dict[ServerConnection, ClientConnection] = {}
        self._pairs: set[tuple[ServerConnection, ClientConnection]] = set()
        self._refuse = 0
        self._refuse_status = 503
        self._cut_when: Callable[[dict[str, Any]], bool] | None = None
        self.attempts: list[Attempt] = []
        self.cuts: list[float] = []
        self.relayed_to_client = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> FaultRelay:
        self._server = await serve(self._handle, self._host, self._port, process_request=self._process_request,
                                   max_size=None, compression=None, ping_interval=None)
        return self

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def __aenter__(self) -> FaultRelay:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The relay's base URL (give it to a client as `base_url`)."""
        assert self._server is not None, "start() the relay first"
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"http://{self._host}:{port}"

    # -- faults -------------------------------------------------------------------------------

    def cut(self) -> int:
        """Drop every relayed connection at once, both sides, without closing handshakes."""
        pairs = list(self._pairs)
        for down, up in pairs:
            down.transport.abort()
            up.transport.abort()
        self._pairs.clear()
        if pairs:
            self.cuts.append(time.monotonic())
        return len(pairs)

    def refuse(self, count: int, status: int = 503) -> None:
        """Answer the next `count` upgrade attempts with `status`."""
        self._refuse = count
        self._refuse_status = status

    def cut_when(self, predicate: Callable[[dict[str, Any]], bool] | None) -> None:
        """Cut everything when an upstream event satisfies `predicate` (once)."""
        self._cut_when = predicate

    @property
    def live(self) -> int:
        return len(self._pairs)

    # -- relaying -----------------------------------------------------------------------------

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        now = time.monotonic()
        if self._refuse > 0:
            self._refuse -= 1
            self.attempts.append(Attempt(now, self._refuse_status, request.path))
            return connection.respond(HTTPStatus(self._refuse_status), "refused by the relay\n")
        headers = {k: v for k, v in request.headers.raw_items() if k.lower() in ("authorization", "openai-beta")}
        protocols = request.headers.get("Sec-WebSocket-Protocol")
        try:
            upstream = await connect(self._upstream + request.path, additional_headers=headers, max_size=None,
                                     compression=None, ping_interval=None, open_timeout=10,
                                     subprotocols=[p.strip() for p in protocols.split(",")] if protocols else None)  # type: ignore[misc]
        except InvalidStatus as exc:
            status = exc.response.status_code
            self.attempts.append(Attempt(now, status, request.path))
            response = connection.respond(HTTPStatus(status), exc.response.body.decode("utf-8", "replace"))
            return response
        except (OSError, TimeoutError) as exc:
            self.attempts.append(Attempt(now, 502, request.path))
            return connection.respond(HTTPStatus.BAD_GATEWAY, f"upstream unreachable: {exc}\n")
        self._pending[connection] = upstream
        self.attempts.append(Attempt(now, 101, request.path))
        return None

    async def _handle(self, down: ServerConnection) -> None:
        up = self._pending.pop(down, None)
        if up is None:
            return
        pair = (down, up)
        self._pairs.add(pair)

        async def upstream_to_client() -> None:
            async for message in up:
                predicate = self._cut_when
                if predicate is not None:
                    with contextlib.suppress(Exception):
                        if predicate(json.loads(message)):
                            self._cut_when = None
                            self.cut()
                            return
                await down.send(message)
                self.relayed_to_client += 1

        async def client_to_upstream() -> None:
            async for message in down:
                await up.send(message)

        tasks = [asyncio.ensure_future(upstream_to_client()), asyncio.ensure_future(client_to_upstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._pairs.discard(pair)
            for conn in (down, up):
                with contextlib.suppress(ConnectionClosed, Exception):
                    await asyncio.wait_for(conn.close(), 1)
