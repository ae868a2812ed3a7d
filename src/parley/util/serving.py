"""Serving an ASGI app from a background thread (tests, benchmarks, embedding)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from parley.http.malformed import JsonErrorsProtocol
from parley.protocol.limits import MAX_EVENT_BYTES

_DENIED = "ASGI callable returned without completing handshake."


class _DeniedHandshakeFilter(logging.Filter):
    """Drops the ERROR uvicorn's websockets-sansio protocol logs after every WebSocket denial
    response (a 401 for a bad key, a 404 for an unknown call), although the client got the
    denial: it never marks the handshake complete (Kludex/uvicorn#3138, open). Our apps always
    accept or deny, so the line is noise, and alerting on ERROR would fire on every bad key."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _DENIED


def quiet_denied_handshakes() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DeniedHandshakeFilter) for f in logger.filters):
        logger.addFilter(_DeniedHandshakeFilter())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# WebSocket messages uvicorn takes: well above the protocol's own limit, so that the session, not
# uvicorn, answers a message too large (with an error event; the session goes on).
WS_MAX_SIZE = 2 * MAX_EVENT_BYTES


def run_app(app: Any, *, host: str, port: int, **options: Any) -> None:
    """`uvicorn.run` as `parley serve` and `parley engine` run it: our JSON error for requests
    uvicorn refuses itself, no spurious handshake ERRORs."""
    quiet_denied_handshakes()
    uvicorn.run(app, host=host, port=port, http=JsonErrorsProtocol, ws_max_size=WS_MAX_SIZE, **options)


@contextmanager
def serve_app(app: Any, *, host: str = "127.0.0.1", port: int | None = None,
              http: type[asyncio.Protocol] = JsonErrorsProtocol) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a background thread, as `run_app` would; yields its base URL."""
    port = port or free_port()
    quiet_denied_handshakes()
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", ws_max_size=WS_MAX_SIZE,
                            lifespan="on", http=http)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
