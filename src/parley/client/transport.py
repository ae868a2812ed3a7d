"""Transports move JSON events (and, for WebRTC, media) between the client and an upstream.

A transport is opened once with a key and then carries one session; reconnecting means a new
transport. `recv()` returns raw JSON text; the client parses it. Errors are reported as
`ConnectError` (could not open: with the HTTP status when there was one) and `TransportClosed`
(an open transport went away).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

__all__ = [
    "AuthenticationError",
    "ConnectError",
    "RealtimeError",
    "Transport",
    "TransportClosed",
    "WebSocketTransport",
]

USER_AGENT = "parley-client/0.1"


class RealtimeError(Exception):
    """Base class of the client's errors."""


class ConnectError(RealtimeError):
    """Opening a transport failed. `status` is the HTTP status of a refused handshake."""

    def __init__(self, message: str, *, status: int | None = None, body: str = "", code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.code = code

    @property
    def retryable(self) -> bool:
        """Network failures, timeouts, 408/429 and 5xx are worth another attempt; other 4xx are not."""
        return self.status is None or self.status in (408, 425, 429) or self.status >= 500


class AuthenticationError(ConnectError):
    """The upstream refused the key (401/403): it may have expired."""

    @property
    def retryable(self) -> bool:
        return False


def connect_error(status: int, body: bytes | str | None, what: str) -> ConnectError:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    code = None
    message = text[:300]
    with contextlib.suppress(Exception):
        import json

        err = json.loads(text).get("error") or {}
        code = err.get("code")
        message = err.get("message") or message
    cls = AuthenticationError if status in (401, 403) else ConnectError
    return cls(f"{what} refused with HTTP {status}: {message}", status=status, body=text, code=code)


class TransportClosed(RealtimeError):
    """The transport closed (`code`: the WebSocket close code when there is one)."""

    def __init__(self, reason: str = "", code: int | None = None) -> None:
        super().__init__(reason or f"closed ({code})")
        self.reason = reason
        self.code = code


class Transport:
    """What the client needs from a transport."""

    name = "transport"
    #: True when assistant audio arrives as `response.output_audio.delta` events.
    audio_in_events = True
    #: Called with PCM16 24 kHz mono when audio arrives on a media track (WebRTC).
    on_audio: Callable[[bytes], None] | None = None

    async def open(self, key: str) -> None:
        raise NotImplementedError

    async def send(self, text: str) -> None:
        raise NotImplementedError

    async def recv(self) -> str | bytes:
        raise NotImplementedError

    async def send_audio(self, pcm16: bytes) -> None:
        """Microphone audio, PCM16 24 kHz mono (already in the session's format for WebSocket)."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake (tests, benchmarks)."""

    @property
    def closed(self) -> bool:
        raise NotImplementedError


class WebSocketTransport(Transport):
    """The GA WebSocket: `Authorization: Bearer` on the upgrade, one JSON object per text frame."""

    name = "websocket"
    audio_in_events = True

    def __init__(self, url: str, *, headers: dict[str, str] | None = None, open_timeout: float = 10.0,
                 ping_interval: float | None = 20.0, compression: str | None = None) -> None:
        self.url = url
        self._headers = dict(headers or {})
        self._open_timeout = open_timeout
        self._ping_interval = ping_interval
        self._compression = compression
        self._ws: ClientConnection | None = None
        self._prefix = '{"type":"input_audio_buffer.append","audio":"'

    async def open(self, key: str) -> None:
        headers = {"Authorization": f"Bearer {key}", **self._headers}
        try:
            self._ws = await connect(
                self.url, additional_headers=headers, max_size=None, open_timeout=self._open_timeout,
                ping_interval=self._ping_interval, ping_timeout=self._ping_interval, compression=self._compression,
                user_agent_header=USER_AGENT, max_queue=None)
        except InvalidStatus as exc:
            raise connect_error(exc.response.status_code, exc.response.body, "The WebSocket upgrade") from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ConnectError(f"Could not open {self.url}: {type(exc).__name__}: {exc}") from None

    @property
    def ws(self) -> ClientConnection:
        if self._ws is None:
            raise TransportClosed("not open")
        return self._ws

    async def send(self, text: str) -> None:
        try:
            await self.ws.send(text)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def recv(self) -> str | bytes:
        try:
            return await self.ws.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def send_audio(self, pcm16: bytes) -> None:
        # Built by hand: json.dumps would scan the whole base64 string for characters to escape.
        await self.send(self._prefix + base64.b64encode(pcm16).decode("ascii") + '"}')

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2)

    def abort(self) -> None:
        if self._ws is not None:
            self._ws.transport.abort()

    @property
    def closed(self) -> bool:
        return self._ws is None or self._ws.state is websockets.protocol.State.CLOSED

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code if self._ws is not None else None


def _closed(exc: ConnectionClosed) -> TransportClosed:
    frame: Any = exc.rcvd or exc.sent
    code = frame.code if frame is not None else 1006
    reason = frame.reason if frame is not None else "connection lost"
    return TransportClosed(reason or ("connection lost" if code == 1006 else f"closed with code {code}"), code)
